"""The train stage: DPO (or SFT on the chosen responses) on a pairs file, with TRL, LoRA or full weights.

``train(TrainConfig(model=..., pairs=..., out=...))`` builds a ``DPOConfig`` (TRL's fields, every one settable
through ``dpo``), hands the model to TRL's ``DPOTrainer`` (used, not subclassed) and writes a model folder:

    out/adapter_config.json, adapter_model.safetensors, tokenizer files   (LoRA, the default)
    out/config.json, model.safetensors, tokenizer files                   (--full)
    out/merged/                  full weights with the adapter merged in (--merge)
    out/train_config.json        the resolved TrainConfig, the DPOConfig used, the versions
    out/metrics.jsonl            one row per logging step; out/curves.png; out/train_summary.json (written last)

Speed: the reference log-probs are computed once (cached on disk, ``mipo.ref_cache``) instead of a reference
forward at every step; batches are grouped by length (little padding); no gradient checkpointing on a CPU.
Under ``accelerate launch`` the same code runs data-parallel (DDP, DeepSpeed ZeRO, FSDP).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipo import versions
from mipo.config import add_config_arguments, option, require, resolve, to_dict
from mipo.errors import ConfigError, MipoError, OutputExistsError
from mipo.files import atomic_write_json
from mipo.models import DEFAULT_MODEL

log = logging.getLogger(__name__)

LORA_DEFAULTS = {
    "lora_r": 16,
    "lora_alpha": 32.0,
    "lora_dropout": 0.05,
    "lora_target_modules": ["all-linear"],
}
LEARNING_RATE = {"lora": 2e-4, "full": 5e-7}
# first-class flag -> the DPOConfig / SFTConfig field it sets
TRL_NAMES = {
    "beta": "beta",
    "learning_rate": "learning_rate",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "grad_accumulation": "gradient_accumulation_steps",
    "max_length": "max_length",
    "loss_type": "loss_type",
    "seed": "seed",
    "max_steps": "max_steps",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
}
SUMMARY = "train_summary.json"


@dataclass
class TrainConfig:
    model: str = option(DEFAULT_MODEL, "model to train: a built-in name, a model folder or a Hub id")
    pairs: str = option("", "preference pairs: JSONL or Parquet in TRL's format (prompt, chosen, rejected)")
    out: str = option("", "output folder (a Hugging Face model folder plus metrics)")
    objective: str = option("dpo", "dpo, or sft: train on the chosen responses alone", choices=["dpo", "sft"])
    full: bool = option(False, "fine-tune all weights against a frozen reference instead of a LoRA adapter")
    lora_r: int | None = option(None, "LoRA rank (default 16)")
    lora_alpha: float | None = option(None, "LoRA alpha (default 32, a scale of alpha/r = 2)")
    lora_dropout: float | None = option(None, "LoRA dropout (default 0.05; TRL's disable_dropout zeroes it)")
    lora_target_modules: list[str] | None = option(None, "modules given adapters (default all-linear)")
    beta: float | None = option(None, "DPO beta (default 0.1, the paper's)")
    learning_rate: float | None = option(None, "peak learning rate (default 2e-4 with LoRA, 5e-7 full)")
    epochs: float | None = option(None, "passes over the pairs (default 1, the paper's)")
    batch_size: int | None = option(None, "pairs per device per step (default 8)")
    grad_accumulation: int | None = option(None, "steps accumulated per optimizer update (default 1)")
    max_length: int | None = option(None, "truncate prompt+response to this many tokens (default 1024)")
    loss_type: str | None = option(None, "DPO loss (default sigmoid); any of TRL's loss_type values")
    seed: int | None = option(None, "random seed (default 42)")
    max_steps: int | None = option(None, "stop after this many optimizer steps (overrides epochs)")
    logging_steps: int | None = option(None, "a metrics row every this many steps (default 1)")
    save_steps: int | None = option(None, "a resumable checkpoint every this many steps (default 50)")
    merge: bool = option(False, "also write merged full weights to OUT/merged (LoRA)")
    ref_cache: bool = option(True, "cache the reference log-probs on disk and reuse them")
    device: str | None = option(None, "cpu or cuda (default: cuda if available)")
    overwrite: bool = option(False, "replace a finished or interrupted run in OUT")
    resume: bool = option(False, "continue an interrupted run in OUT from its last checkpoint")
    dpo: dict = option({}, "any DPOConfig (SFTConfig with --objective sft) field")

    def __post_init__(self) -> None:
        problems = []
        if not self.pairs:
            problems.append("--pairs is required")
        if not self.out:
            problems.append("--out is required")
        if self.objective not in ("dpo", "sft"):
            problems.append(f"--objective must be dpo or sft, got {self.objective!r}")
        lora_set = [f"--{k.replace('_', '-')}" for k in LORA_DEFAULTS if getattr(self, k) is not None]
        if self.full and lora_set:
            problems.append(f"--full fine-tunes all weights: drop the LoRA options {', '.join(lora_set)}")
        if self.full and self.merge:
            problems.append("--merge applies to a LoRA adapter; --full already writes full weights")
        if self.overwrite and self.resume:
            problems.append("choose one of --overwrite and --resume")
        for name, value in (
            ("learning_rate", self.learning_rate),
            ("beta", self.beta),
            ("epochs", self.epochs),
        ):
            if value is not None and value <= 0:
                problems.append(f"--{name.replace('_', '-')} must be > 0, got {value}")
        for name in (
            "batch_size",
            "grad_accumulation",
            "max_length",
            "lora_r",
            "logging_steps",
            "save_steps",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        clash = [
            k for k, trl_name in TRL_NAMES.items() if getattr(self, k) is not None and trl_name in self.dpo
        ]
        if clash:
            problems.append(f"set {', '.join(clash)} either as a flag or in dpo, not both")
        require(problems)

    @property
    def method(self) -> str:
        return "full" if self.full else "lora"


def _check_out(config: TrainConfig, is_main: bool) -> str | None:
    """Refuse to clobber a run; return the checkpoint to resume from (or None for a fresh start)."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(config.out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not out.is_dir():
        raise MipoError(f"{out}: exists and is not a folder")
    ours = (out / "train_config.json").is_file() or (out / "checkpoints").is_dir()
    finished = (out / SUMMARY).is_file()
    if config.overwrite:
        if not ours:
            raise MipoError(
                f"{out}: not a mipo training folder, refusing to replace it; choose another --out"
            )
        if is_main:
            shutil.rmtree(out)
        return None
    if config.resume:
        if finished:
            raise MipoError(f"{out}: this run already finished; pass --overwrite to train again")
        checkpoints = out / "checkpoints"
        return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    raise OutputExistsError(out)


def _sharded_launch(trl_kwargs: dict[str, Any]) -> bool:
    """DeepSpeed or FSDP: the model is sharded, so TRL's own precompute (which handles that) is used."""
    import os

    env = any(
        os.environ.get(k, "").lower() == "true" for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")
    )
    return env or bool(trl_kwargs.get("deepspeed")) or bool(trl_kwargs.get("fsdp"))


def build_trl_kwargs(config: TrainConfig, device: str, fields: set[str]) -> dict[str, Any]:
    """mipo's defaults for this device, then the first-class flags, then the ``dpo`` mapping."""
    import torch

    on_gpu = device.startswith("cuda")
    kwargs: dict[str, Any] = {
        "output_dir": str(Path(config.out) / "checkpoints"),
        "learning_rate": LEARNING_RATE[config.method],
        "num_train_epochs": 1.0,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "max_length": 1024,
        "seed": 42,
        "logging_steps": 1,
        "save_steps": 50,
        "save_total_limit": 2,
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        # Recomputing activations costs a third more compute; worth it only where memory is short (a GPU).
        "gradient_checkpointing": on_gpu,
        "report_to": "none",
        "disable_tqdm": False,  # a progress bar, whatever the log level
        "dataloader_num_workers": 0,
        "train_sampling_strategy": "group_by_length",
    }
    if config.objective == "dpo":
        kwargs.update(
            beta=0.1,
            loss_type=["sigmoid"],
            precompute_ref_log_probs=True,
            length_column_name="length",
            remove_unused_columns=False,  # keep the length column for the sampler (the collator ignores it)
        )
    for name, trl_name in TRL_NAMES.items():
        value = getattr(config, name)
        if value is not None and trl_name in fields:
            kwargs[trl_name] = [value] if trl_name == "loss_type" and config.objective == "dpo" else value
    unknown = [k for k in config.dpo if k not in fields]
    if "output_dir" in config.dpo:
        raise ConfigError("dpo: output_dir is set by --out")
    if unknown:
        raise ConfigError(
            f"dpo: unknown {'SFTConfig' if config.objective == 'sft' else 'DPOConfig'} field(s) {unknown}"
        )
    kwargs.update(config.dpo)
    return {k: v for k, v in kwargs.items() if k in fields}


def train(config: TrainConfig, *, callbacks: list | tuple = ()) -> Path:
    """Train and return the output folder (see the module docstring for its files)."""
    from accelerate import PartialState

    from mipo.curves import MetricsCallback, QuietProgressCallback, plot_curves
    from mipo.models import _adapter_base, default_device, load_model, resolve_model
    from mipo.ref_cache import attach_reference_logps, reference_identity
    from mipo.train_data import file_sha256, read_pairs, to_sft_rows

    state = PartialState()
    out = Path(config.out)
    checkpoint = _check_out(config, state.is_main_process)
    pairs = read_pairs(config.pairs)
    source = resolve_model(config.model)
    if _adapter_base(source) and not config.full:
        raise MipoError(
            f"{config.model}: is a LoRA adapter; train a new adapter on its merged weights "
            f"({config.model}/merged, from --merge) or pass --full"
        )
    state.wait_for_everyone()  # every process has checked OUT before the main one writes there

    import torch
    from datasets import Dataset
    from peft import LoraConfig

    device = config.device or default_device()
    if config.objective == "dpo":
        from trl import DPOConfig as ArgsClass
        from trl import DPOTrainer as TrainerClass
    else:
        from trl import SFTConfig as ArgsClass
        from trl import SFTTrainer as TrainerClass
    fields = {f.name for f in dataclasses.fields(ArgsClass)}
    kwargs = build_trl_kwargs(config, device, fields)
    mipo_precompute = (
        config.objective == "dpo" and kwargs.get("precompute_ref_log_probs") and not _sharded_launch(kwargs)
    )
    if mipo_precompute:
        kwargs["precompute_ref_log_probs"] = False  # mipo computes (or reuses) them right after construction
    try:
        args = ArgsClass(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid {ArgsClass.__name__}: {e}") from None

    # LoRA keeps the frozen base in bf16 on a GPU; full fine-tuning keeps fp32 master weights (bf16 autocast).
    dtype = torch.bfloat16 if args.bf16 and not config.full else torch.float32
    model, tokenizer = load_model(config.model, device="cpu", dtype=dtype)
    model.train()
    peft_config = None
    if not config.full:
        lora = {
            k: getattr(config, k) if getattr(config, k) is not None else v for k, v in LORA_DEFAULTS.items()
        }
        targets = lora["lora_target_modules"]
        peft_config = LoraConfig(
            r=lora["lora_r"],
            lora_alpha=lora["lora_alpha"],
            lora_dropout=lora["lora_dropout"],
            target_modules="all-linear" if targets == ["all-linear"] else targets,
            task_type="CAUSAL_LM",
        )
    rows = pairs if config.objective == "dpo" else to_sft_rows(pairs)
    resume_step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else (0 if config.resume else None)
    metrics = MetricsCallback(out / "metrics.jsonl", resume_step=resume_step)
    trainer = TrainerClass(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics, *callbacks],
    )
    # The library logs, only the CLI prints: keep the bar, drop the Trainer's printing of each log dict.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgressCallback)
    reference: dict[str, Any] = {
        "precomputed": bool(kwargs.get("precompute_ref_log_probs") or mipo_precompute)
    }
    if config.objective == "dpo":
        if mipo_precompute:
            fields_for_key = {
                "reference": reference_identity(source),
                "pairs_sha256": file_sha256(config.pairs),
                "max_length": args.max_length,
                "truncation_mode": args.truncation_mode,
                "ld_alpha": args.ld_alpha,
                "dtype": str(dtype),
                "device": torch.device(device).type,
            }
            batch_size = args.precompute_ref_batch_size or 2 * args.per_device_train_batch_size
            reference.update(
                attach_reference_logps(
                    trainer, fields_for_key, batch_size=batch_size, use_cache=config.ref_cache
                )
            )
        dataset = trainer.train_dataset
        lengths = [
            len(p) + max(len(c), len(r))
            for p, c, r in zip(
                dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True
            )
        ]
        dataset = dataset.remove_columns(
            [c for c in ("prompt", "chosen", "rejected") if c in dataset.column_names]
        )
        trainer.train_dataset = dataset.add_column("length", lengths)

    if state.is_main_process:
        atomic_write_json(
            out / "train_config.json",
            {
                "train_config": to_dict(config),
                "model_source": source,
                f"{config.objective}_config": args.to_dict(),
                "reference_log_probs": reference,
                "versions": versions(),
            },
        )
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    trainer.save_model(str(out))
    if state.is_main_process:
        tokenizer.save_pretrained(out)
        if config.merge:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(out / "merged")
            tokenizer.save_pretrained(out / "merged")
        rows_logged = metrics.rows
        if rows_logged:
            plot_curves(
                rows_logged, out / "curves.png", title=f"mipo train ({config.objective}, {config.method})"
            )
        last = rows_logged[-1] if rows_logged else {}
        session_tokens = float(last.get("num_tokens", 0.0)) if rows_logged else 0.0
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        atomic_write_json(
            out / SUMMARY,
            {
                "steps": trainer.state.global_step,
                "seconds": round(seconds, 2),
                "tokens": session_tokens,
                "tokens_per_second": round(session_tokens / max(seconds, 1e-9), 2),
                "final_loss": last.get("loss"),
                "final_margins": last.get("rewards/margins"),
                "final_accuracies": last.get("rewards/accuracies"),
                "resumed_from": checkpoint,
                "reference_cache_hit": reference.get("hit"),
            },
        )
        log.info("trained %d steps in %.1f s; wrote %s", trainer.state.global_step, seconds, out)
    state.wait_for_everyone()
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="YAML", help="settings file (keys as below; a dpo: mapping for TRL)"
    )
    add_config_arguments(parser, TrainConfig)


def main(args: argparse.Namespace) -> int:
    config = resolve(TrainConfig, args, yaml_path=args.config)
    out = train(config)
    from accelerate import PartialState

    summary = json.loads((out / SUMMARY).read_text()) if (out / SUMMARY).is_file() else {}
    if summary and PartialState().is_main_process:
        print(
            f"{out}: {summary['steps']} steps in {summary['seconds']} s, {summary['tokens_per_second']} tokens/s, "
            f"final loss {summary['final_loss']}, margins {summary['final_margins']}"
        )
    return 0
