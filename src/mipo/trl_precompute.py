"""The one place mipo reaches into TRL's ``DPOTrainer``: telling it the reference log-probs are precomputed.

With ``precompute_ref_log_probs=True``, ``DPOTrainer.__init__`` computes the reference log-probs, stores them
as the dataset columns ``ref_chosen_logps``/``ref_rejected_logps``, sets ``self.precompute_ref_logps`` and
drops the reference model; each step then reads the columns. mipo builds the trainer with the flag off,
adds the columns itself (``mipo.ref_cache``, cached on disk) and sets the same three attributes. These names
are TRL 1.16's; ``tests/test_trl_precompute.py`` fails loudly if an installed TRL stops reading them.
"""

from __future__ import annotations

from typing import Any

TESTED_WITH_TRL = "1.16"


def use_precomputed_reference(trainer: Any) -> None:
    """After the columns are in ``trainer.train_dataset``: what ``precompute_ref_log_probs=True`` sets up."""
    trainer.precompute_ref_logps = True
    trainer.args.precompute_ref_log_probs = True
    trainer.ref_model = None  # a full fine-tuning reference copy is released
