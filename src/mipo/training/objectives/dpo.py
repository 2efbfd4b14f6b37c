"""DPO on the pairs as they are (MIPO's objective), with TRL's ``DPOTrainer``.

The reference log-probs are computed once before training and cached on disk (``mipo.training.ref_cache``) instead
of a reference forward at every step; each pair's prompt is scored once, the two replies attending to one
copy of it (``mipo.engine.shared_prompt``; ``--no-share-prompt`` for TRL's two rows); the trainer's dataset gets a
``length`` column so that batches can be grouped by length (little padding).
"""

from __future__ import annotations

import os
from typing import Any

from mipo.training.objectives.base import OBJECTIVES, Objective, TrainingRun


def _sharded_launch(settings: dict[str, Any]) -> bool:
    """DeepSpeed or FSDP: the model is sharded, so TRL's own precompute (which handles that) is used."""
    env = any(
        os.environ.get(k, "").lower() == "true" for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")
    )
    return env or bool(settings.get("deepspeed")) or bool(settings.get("fsdp"))


def take_over_precompute(run: TrainingRun) -> None:
    """mipo computes (or reuses from its disk cache) the reference log-probs right after the trainer is built."""
    settings = run.trl_settings
    run.state["mipo_precompute"] = bool(settings.get("precompute_ref_log_probs")) and not _sharded_launch(
        settings
    )
    if run.state["mipo_precompute"]:
        settings["precompute_ref_log_probs"] = False


def attach_reference_and_lengths(trainer: Any, run: TrainingRun) -> dict[str, Any]:
    import torch

    from mipo.core.fingerprint import file_sha256, weights_identity
    from mipo.engine.shared_prompt import share_prompts
    from mipo.training.ref_cache import attach_reference_logps

    args = trainer.args
    shared = run.config.share_prompt and not _sharded_launch(run.trl_settings) and share_prompts(trainer)
    reference: dict[str, Any] = {
        "precomputed": bool(args.precompute_ref_log_probs or run.state["mipo_precompute"]),
        "shared_prompt": shared,
    }
    if run.state["mipo_precompute"]:
        key_fields = {
            "reference": weights_identity(run.model_source),
            "pairs_sha256": file_sha256(run.config.pairs),
            "max_length": args.max_length,
            "truncation_mode": args.truncation_mode,
            "ld_alpha": args.ld_alpha,
            "dtype": str(run.state["dtype"]),
            "mixed_precision": "bf16"
            if args.bf16
            else ("fp16" if args.fp16 else "no"),  # autocast of the passes
            "device": torch.device(run.device).type,
            "shared_prompt": shared,  # the same log-probs, rounded differently
        }
        batch_size = args.precompute_ref_batch_size or 2 * args.per_device_train_batch_size
        reference.update(
            attach_reference_logps(trainer, key_fields, batch_size=batch_size, use_cache=run.config.ref_cache)
        )
    dataset = trainer.train_dataset
    lengths = [  # of the longest row a pair makes: one packed row, or TRL's two
        len(p) + (len(c) + len(r) + 1 if shared else max(len(c), len(r)))
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
    ]
    dataset = dataset.remove_columns(
        [c for c in ("prompt", "chosen", "rejected") if c in dataset.column_names]
    )
    trainer.train_dataset = dataset.add_column("length", lengths)
    return reference


def pairs_as_they_are(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return pairs


OBJECTIVES.register(
    "dpo",
    Objective(
        config_class="trl:DPOConfig",
        trainer_class="trl:DPOTrainer",
        prepare_rows=pairs_as_they_are,
        description="DPO on the pairs (MIPO)",
        defaults={
            "precompute_ref_log_probs": True,
            "length_column_name": "length",
            "remove_unused_columns": False,  # keep the length column for the sampler (the collator ignores it)
        },
        before_trainer=take_over_precompute,
        after_trainer=attach_reference_and_lengths,
    ),
)
