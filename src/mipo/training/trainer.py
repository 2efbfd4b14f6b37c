"""The train stage: a training objective (DPO by default, SFT, or one registered) on a pairs file, with TRL.

``train(TrainConfig(model=..., pairs=..., out=...))`` builds the objective's TRL config (``DPOConfig``,
``SFTConfig``: every field settable under its TRL name), hands the model to TRL's trainer (used, not
subclassed) and writes a model folder:

    out/adapter_config.json, adapter_model.safetensors, tokenizer files   (LoRA, the default)
    out/config.json, model.safetensors, tokenizer files                   (--full; bf16 if trained in bf16)
    out/merged/                  full weights with the adapter merged in (--merge)
    out/train_config.json        the resolved TrainConfig, the TRL config used, the versions
    out/metrics.jsonl            one row per logging step; out/curves.png; out/train_summary.json (written last)
    out/mipo_run.json            what this run wrote and its fingerprint (``mipo.formats.run_folder``)

Objectives live in ``mipo.training.objectives`` (one module each). Speed: with DPO the reference log-probs are computed
once (cached on disk, ``mipo.training.ref_cache``); batches are grouped by length; no gradient checkpointing on a CPU.
Under ``accelerate launch`` the same code runs data-parallel (DDP, DeepSpeed ZeRO, FSDP).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipo import versions
from mipo.core.config import (
    to_dict,
)
from mipo.core.errors import ConfigError, MipoError
from mipo.core.files import atomic_write_json
from mipo.engine.trl_internals import reply_positions_only
from mipo.formats.run_folder import CHECKPOINTS, FINGERPRINT, SUMMARY
from mipo.training.config import TrainConfig, trl_settings

log = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """Everything decided before anything is written: inputs read, settings checked, the folder planned."""

    config: TrainConfig
    objective: Any  # mipo.training.objectives.Objective
    model_source: str
    pairs: list[dict[str, Any]]
    device: str
    folder: Any  # mipo.formats.run_folder.RunFolder
    fingerprint: dict[str, Any]


def plan_job(config: TrainConfig) -> TrainingJob:
    """Read and check every input and setting; refuse what would lose data. Writes nothing."""
    from mipo.core.files import check_resume
    from mipo.engine.models import adapter_base, default_device, resolve_model
    from mipo.formats import run_folder
    from mipo.formats.pairs_file import read_pairs

    run_folder.refuse_inputs_inside(config.out, {"--pairs": config.pairs, "--model": config.model})
    objective = config.training_objective()
    objective.config()  # an objective whose TRL classes do not import fails here, before any folder exists
    folder = run_folder.plan(config.out, overwrite=config.overwrite, resume=config.resume)
    pairs = read_pairs(config.pairs, keep=objective.pair_fields, flags=objective.pair_flags)
    source = resolve_model(config.model)
    if adapter_base(source) and not config.full:
        raise MipoError(
            f"{config.model}: is a LoRA adapter; train a new adapter on its merged weights "
            f"({config.model}/merged, from --merge) or pass --full"
        )
    if objective.refuses_zero3 and zero_stage(config.dpo) == 3:
        raise ConfigError(
            f"--objective {config.objective} cannot run under DeepSpeed ZeRO-3: {objective.refuses_zero3}; launch "
            "it with DDP (accelerate launch --multi_gpu) or ZeRO-2 (zero_stage: 2), or train --objective dpo"
        )
    device = config.device or default_device()
    fingerprint = job_fingerprint(config, source, device)
    if folder.checkpoint:
        check_resume(
            folder.work / CHECKPOINTS / FINGERPRINT, fingerprint, what=f"the training in {config.out}"
        )
    return TrainingJob(config, objective, source, pairs, device, folder, fingerprint)


def zero_stage(trl_fields: dict[str, Any]) -> int | None:
    """The DeepSpeed ZeRO stage of this launch: accelerate launch's (its config file's ``zero_stage``), else
    that of a ``deepspeed`` config given to TRL (a mapping or a JSON file); None without DeepSpeed."""
    import json
    import os

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        return int(stage) if stage else None
    settings = trl_fields.get("deepspeed")
    if isinstance(settings, str) and Path(settings).is_file():
        settings = json.loads(Path(settings).read_text())
    stage = settings.get("zero_optimization", {}).get("stage") if isinstance(settings, dict) else None
    return int(stage) if stage is not None else None


def job_fingerprint(config: TrainConfig, model_source: str, device: str) -> dict[str, Any]:
    """What the trained weights depend on: the model, the pairs, every setting that changes them, mipo."""
    import torch

    from mipo.core.fingerprint import fingerprint, input_identity, weights_identity
    from mipo.engine.dtypes import dtype_name

    where = ("model", "pairs", "out", "overwrite", "resume", "ref_cache", "device")
    settings = {k: v for k, v in to_dict(config).items() if k not in where}
    settings["dtype"] = dtype_name(config.dtype, device)  # auto, resolved: a resume on another CPU is refused
    return fingerprint(
        model=weights_identity(model_source),
        pairs=input_identity(config.pairs),
        device=torch.device(device).type,
        settings=settings,
    )


def start_folder(job: TrainingJob) -> None:
    """(Main process.) Make the folder the run writes in and record what it is, before any training."""
    from mipo.core.files import write_fingerprint
    from mipo.formats import run_folder

    run_folder.clear_staging(job.folder)
    work = job.folder.work
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MipoError(f"--out {job.config.out}: cannot create it ({e.strerror or e})") from None
    # The marker first: a kill right after it leaves a folder mipo knows as its own (resumable, removable).
    ours = [CHECKPOINTS, "metrics.jsonl", "train_config.json"]
    previous = run_folder.read_marker(work) or {"entries": []}
    run_folder.write_marker(work, job.fingerprint, ours + previous["entries"])
    (work / CHECKPOINTS).mkdir(exist_ok=True)
    if not job.folder.checkpoint:
        write_fingerprint(work / CHECKPOINTS / FINGERPRINT, job.fingerprint)


def build_args(job: TrainingJob, run: Any) -> Any:
    """The objective's TRL config (building it also sets up the processes of a distributed launch)."""
    objective = job.objective
    if objective.before_trainer:
        objective.before_trainer(run)
    config_class = objective.config()
    try:
        return config_class(**run.trl_settings)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid {config_class.__name__}: {e}") from None


def build_trainer(job: TrainingJob, run: Any, args: Any, callbacks: list | tuple) -> tuple[Any, Any]:
    """The objective's TRL trainer, with the model (LoRA or full), the rows and mipo's callbacks."""
    import torch
    from datasets import Dataset

    from mipo.engine.models import checkpointing_aliases_ignored, load_model
    from mipo.training.callbacks import MetricsCallback, use_quiet_progress

    config, objective = job.config, job.objective
    # With bf16 (--dtype), LoRA keeps the frozen base in bf16 (PEFT keeps the adapters in fp32); full
    # fine-tuning keeps fp32 master weights and computes under bf16 autocast, on a GPU as on a CPU.
    run.state["dtype"] = torch.bfloat16 if args.bf16 and not config.full else torch.float32
    # Onto this process's device (args.device: its GPU under accelerate launch), not the CPU of every rank
    model, tokenizer = load_model(config.model, device=str(args.device), dtype=run.state["dtype"])
    model.train()
    checkpoint = job.folder.checkpoint
    resume_step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else (0 if config.resume else None)
    metrics = MetricsCallback(job.folder.work / "metrics.jsonl", resume_step=resume_step)
    with checkpointing_aliases_ignored():  # PEFT 0.21's get_peft_model reads a deprecated transformers name
        trainer = objective.trainer()(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(objective.prepare_rows(job.pairs)),
            processing_class=tokenizer,
            peft_config=None if config.full else lora_config(config),
            callbacks=[metrics, *callbacks],
        )
    use_quiet_progress(trainer)
    return trainer, metrics


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )


def write_train_config(job: TrainingJob, trainer: Any, reference: dict[str, Any]) -> None:
    atomic_write_json(
        job.folder.work / "train_config.json",
        {
            "train_config": to_dict(job.config),
            "model_source": job.model_source,
            f"{job.config.objective}_config": trainer.args.to_dict(),
            "reference_log_probs": reference,
            "versions": versions(),
        },
    )


def save_outputs(job: TrainingJob, trainer: Any, metrics: Any, seconds: float, reference: dict) -> None:
    """(Main process.) The model, merged weights, curves and the summary; then the folder is complete."""
    from mipo.formats import run_folder
    from mipo.formats.metrics import plot_curves

    config, work = job.config, job.folder.work
    trainer.processing_class.save_pretrained(work)
    if config.merge:
        import torch

        from mipo.engine.models import load_model

        # From the adapter just saved into a base loaded on the CPU, in the dtype the base trained in: under
        # ZeRO-3 or FSDP the trainer's parameters are shards, of which this process holds a part.
        dtype = torch.bfloat16 if trainer.args.bf16 else torch.float32
        merged, _ = load_model(str(work), device="cpu", dtype=dtype)
        merged.save_pretrained(work / "merged")
        trainer.processing_class.save_pretrained(work / "merged")
    rows = metrics.rows
    if rows:
        plot_curves(rows, work / "curves.png", title=f"mipo train ({config.objective}, {config.method})")
    last = rows[-1] if rows else {}
    session_tokens = float(last.get("num_tokens", 0.0))
    shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
    atomic_write_json(
        work / SUMMARY,
        {
            "steps": trainer.state.global_step,
            "seconds": round(seconds, 2),
            "tokens": session_tokens,
            "tokens_per_second": round(session_tokens / max(seconds, 1e-9), 2),
            "final_loss": last.get("loss"),
            "final_margins": last.get("rewards/margins"),
            "final_accuracies": last.get("rewards/accuracies"),
            "resumed_from": job.folder.checkpoint,
            "reference_cache_hit": reference.get("hit"),
        },
    )
    run_folder.finish(job.folder, job.fingerprint)


@contextlib.contextmanager
def out_of_room(job: TrainingJob) -> Iterator[None]:
    """A full disk or a folder that became unwritable: one line; the checkpoints already written stay."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise MipoError(
            f"{e.filename or job.folder.work}: {e.strerror}; the checkpoints written so far are kept: rerun with "
            "--resume once it can be written"
        ) from None


def train(config: TrainConfig, *, callbacks: list | tuple = ()) -> Path:
    """Train and return the output folder (see the module docstring for its files)."""
    import torch
    from accelerate import PartialState

    from mipo.engine.backends import release_gpu_memory
    from mipo.engine.models import checkpointing_aliases_ignored
    from mipo.training.objectives import TrainingRun

    state = PartialState()
    job = plan_job(config)
    run = TrainingRun(config, job.model_source, job.device, {})
    run.trl_settings = trl_settings(config, job.objective, job.folder.work, job.device)
    args = build_args(job, run)  # from here on, ``state`` knows the processes of a distributed launch
    state.wait_for_everyone()  # every process has checked OUT before the main one writes there
    if state.is_main_process:
        start_folder(job)
    state.wait_for_everyone()
    trainer, metrics = build_trainer(job, run, args, callbacks)
    # The reference pass and every step: the LM head on the reply tokens only; TRL 1.16's reference passes
    # call transformers' deprecated checkpointing names (see mipo.engine.models.CHECKPOINTING_ALIASES).
    with reply_positions_only(), checkpointing_aliases_ignored():
        after = job.objective.after_trainer
        reference = after(trainer, run) if after else {"precomputed": False}
        if state.is_main_process:
            write_train_config(job, trainer, reference)
        if job.folder.checkpoint:
            log.info("resuming from %s", job.folder.checkpoint)
        start = time.perf_counter()
        with out_of_room(job):
            trainer.train(resume_from_checkpoint=job.folder.checkpoint)
            seconds = time.perf_counter() - start
    if config.full and trainer.args.bf16 and not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        # fp32 master weights trained under bf16 autocast: saved (and served) in bf16, half the size. ZeRO-3
        # and FSDP gather their shards when saving, as their configs say (zero3_save_16bit_model).
        trainer.model.to(torch.bfloat16)
    with out_of_room(job):
        trainer.save_model(str(job.folder.work))
        if state.is_main_process:
            save_outputs(job, trainer, metrics, seconds, reference)
        log.info("trained %d steps in %.1f s; wrote %s", trainer.state.global_step, seconds, config.out)
    state.wait_for_everyone()
    del (
        trainer
    )  # the model and its optimizer state: the next stage of mipo run (a vLLM engine) finds the GPU free
    release_gpu_memory()
    return Path(config.out)
