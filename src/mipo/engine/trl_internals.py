"""The places mipo reaches into TRL's internals, each with a test that fails loudly if a TRL release changes them.

1. Precomputed reference log-probs (``use_precomputed_reference``). With ``precompute_ref_log_probs=True``,
   ``DPOTrainer.__init__`` computes the reference log-probs, stores them as the dataset columns
   ``ref_chosen_logps``/``ref_rejected_logps``, sets ``self.precompute_ref_logps`` and drops the reference
   model; each step then reads the columns. mipo builds the trainer with the flag off, adds the columns itself
   (``mipo.training.ref_cache``, cached on disk) and sets the same three attributes.
2. The fused LM head scoring the reply positions only (``reply_positions_only``). TRL's fused LM head
   (``trl.trainer.utils.add_fused_lm_head``, used by ``DPOTrainer`` and mipo's contrastive trainer) projects
   only the labelled positions through the vocabulary on Triton devices, but every position elsewhere, so
   that a compiler (Neuron's) does not see a new tile shape at every batch. A CPU compiles nothing, and there
   the prompt positions cost as much as the reply's for nothing: at 135M with 150 prompt and 48 reply tokens,
   scoring every position makes a training step 1.6x slower (docs/benchmarks.md). The log-probs are the same.

3. One copy of each pair's prompt (``mipo.engine.shared_prompt``) rests on how ``DPOTrainer`` calls the model: every
   collator key but ``completion_mask`` and the reference columns passed to the forward, labels made of
   ``input_ids`` and ``completion_mask``, the output's per-token fields summed per row and chunked into
   chosen and rejected halves; ``tests/engine/test_shared_prompt.py`` checks it against TRL's own rows.
4. The full fine-tune's reference copy released for real (``release_reference_model``). With mipo's precompute,
   ``DPOTrainer`` has loaded a reference copy of the model (``trainer.ref_model``) and
   ``accelerator.prepare_model`` keeps a second reference to it in ``accelerator._models``: both go, so the
   copy (32 GB at 8B in fp32) is freed before training. Before step 0 the policy is the reference, so
   mipo computes the reference log-probs with the policy.

The names are TRL 1.16's; ``tests/engine/test_trl_internals.py`` checks each against the installed TRL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

TESTED_WITH_TRL = "1.16"


def use_precomputed_reference(trainer: Any) -> None:
    """After the columns are in ``trainer.train_dataset``: what ``precompute_ref_log_probs=True`` sets up."""
    trainer.precompute_ref_logps = True
    trainer.args.precompute_ref_log_probs = True
    release_reference_model(trainer)


def release_reference_model(trainer: Any) -> None:
    """Drop a full fine-tune's reference copy from the trainer and from its accelerator (see point 4)."""
    reference, trainer.ref_model = trainer.ref_model, None
    if reference is not None:
        prepared = trainer.accelerator._models
        prepared[:] = [model for model in prepared if model is not reference]


@contextlib.contextmanager
def reply_positions_only() -> Iterator[None]:
    """Inside, TRL's fused LM head scores only the labelled positions on a CPU too (see the module docstring)."""
    from trl.trainer import utils

    original = getattr(utils, "_use_triton", None)
    if original is None:  # another TRL: every position is scored, as TRL does; the test says so loudly
        yield
        return
    utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        utils._use_triton = original
