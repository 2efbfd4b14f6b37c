"""The train stage: a training objective (DPO by default, SFT, or one registered) on a pairs file, with TRL.

``train(TrainConfig(model=..., pairs=..., out=...))`` builds the objective's TRL config (``DPOConfig``,
``SFTConfig``: every field settable under its TRL name), hands the model to TRL's trainer (used, not
subclassed) and writes a model folder:

    out/adapter_config.json, adapter_model.safetensors, tokenizer files   (LoRA, the default)
    out/config.json, model.safetensors, tokenizer files                   (--full)
    out/merged/                  full weights with the adapter merged in (--merge)
    out/train_config.json        the resolved TrainConfig, the TRL config used, the versions
    out/metrics.jsonl            one row per logging step; out/curves.png; out/train_summary.json (written last)
    out/mipo_run.json            what this run wrote and its fingerprint (``mipo.run_folder``)

Objectives live in ``mipo.objectives`` (one module each). Speed: with DPO the reference log-probs are computed
once (cached on disk, ``mipo.ref_cache``); batches are grouped by length; no gradient checkpointing on a CPU.
Under ``accelerate launch`` the same code runs data-parallel (DDP, DeepSpeed ZeRO, FSDP).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

from mipo import versions
from mipo.config import add_config_arguments, field_default, flag_names, option, require, resolve, to_dict
from mipo.errors import ConfigError, MipoError
from mipo.files import atomic_write_json
from mipo.models import DEFAULT_MODEL
from mipo.run_folder import CHECKPOINTS, FINGERPRINT, SUMMARY
from mipo.trl_internals import reply_positions_only

log = logging.getLogger(__name__)

LEARNING_RATE = {"lora": 2e-4, "full": 5e-7}
LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
# mipo's settings for every objective's TRL config, over TRL's own defaults (a user's settings win)
TRL_DEFAULTS: dict[str, Any] = {
    "save_total_limit": 2,
    "report_to": "none",
    "disable_tqdm": False,  # a progress bar, whatever the log level
    "dataloader_num_workers": 0,
    "train_sampling_strategy": "group_by_length",
}
# ... and the ones that depend on the device (see device_settings), as --help states them
DEVICE_DEFAULTS_TEXT = {
    "use_cpu": "True on a CPU",
    "bf16": "True on a GPU that supports it",
    "gradient_checkpointing": "True on a GPU only",
}
# TrainConfig fields that are TRL config fields of the same name and meaning
TRL_FIELDS = (
    "learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "max_length", "beta", "loss_type", "seed", "max_steps", "logging_steps", "save_steps",
)  # fmt: skip


def is_trl_field(name: str) -> bool:
    """Whether some registered objective's TRL config has a field ``name`` (a YAML key mipo passes on)."""
    from mipo import trl_fields
    from mipo.objectives import OBJECTIVES

    return any(name in trl_fields.fields(OBJECTIVES.get(o).config()) for o in OBJECTIVES.names())


@dataclass
class TrainConfig:
    model: str = option(DEFAULT_MODEL, "model to train: a built-in name, a model folder or a Hub id")
    pairs: str = option(None, "preference pairs: JSONL or Parquet in TRL's format (prompt, chosen, rejected)", required=True)  # fmt: skip
    out: str = option(None, "output folder (a Hugging Face model folder plus metrics)", required=True)
    objective: str = option("dpo", "training objective: dpo, sft (on the chosen responses alone), or a registered one")  # fmt: skip
    full: bool = option(False, "fine-tune all weights against a frozen reference instead of a LoRA adapter", negatable=False)  # fmt: skip
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: float = option(32.0, "LoRA alpha (a scale of alpha/r = 2)")
    lora_dropout: float = option(0.05, "LoRA dropout (TRL's disable_dropout zeroes it)")
    lora_target_modules: list[str] = option(["all-linear"], "modules given adapters")
    # TRL's own fields, with mipo's defaults (every other TRL field: flags in the TRL group, or `dpo`)
    learning_rate: float | None = option(None, "peak learning rate", underscore=True, aliases=("--lr",), default_text="2e-4 with LoRA, 5e-7 with --full")  # fmt: skip
    num_train_epochs: float = option(1.0, "passes over the pairs (the paper's)", underscore=True, aliases=("--epochs",))  # fmt: skip
    per_device_train_batch_size: int = option(8, "pairs per device per step", underscore=True, aliases=("--batch-size",))  # fmt: skip
    gradient_accumulation_steps: int = option(1, "steps accumulated per optimizer update", underscore=True, aliases=("--grad-accumulation",))  # fmt: skip
    max_length: int = option(1024, "truncate prompt+response to this many tokens", underscore=True)
    beta: float = option(0.1, "DPO beta (the paper's)", underscore=True)
    loss_type: str | None = option(None, "loss(es), comma-separated; any of the objective's TRL loss_type values", underscore=True, default_text="TRL's: sigmoid for dpo")  # fmt: skip
    seed: int = option(42, "random seed", underscore=True)
    max_steps: int = option(-1, "stop after this many optimizer steps (overrides epochs; -1: no limit)", underscore=True)  # fmt: skip
    logging_steps: int = option(1, "a metrics row every this many steps", underscore=True)
    save_steps: int = option(50, "a resumable checkpoint every this many steps", underscore=True)
    merge: bool = option(False, "also write merged full weights to OUT/merged (LoRA)", negatable=False)
    ref_cache: bool = option(True, "cache the reference log-probs on disk and reuse them")
    share_prompt: bool = option(True, "DPO: score each pair's prompt once, the chosen and the rejected reply attending to one copy (the same log-probs for fewer tokens; sdpa or eager attention)")  # fmt: skip
    device: str | None = option(None, "cpu or cuda", default_text="cuda if available, else cpu")
    overwrite: bool = option(False, "replace a finished or interrupted mipo run in OUT", negatable=False)
    resume: bool = option(
        False, "continue an interrupted run in OUT from its last checkpoint", negatable=False
    )
    dpo: dict = option({}, "any field of the objective's TRL config (DPOConfig, SFTConfig, ...)", rest=is_trl_field, aliases=("--trl",))  # fmt: skip
    # the names before TRL's, kept so that TrainConfig(epochs=2, ...) still works
    epochs: InitVar[float | None] = None
    batch_size: InitVar[int | None] = None
    grad_accumulation: InitVar[int | None] = None

    def __post_init__(
        self, epochs: float | None, batch_size: int | None, grad_accumulation: int | None
    ) -> None:
        for old, new in (
            (epochs, "num_train_epochs"),
            (batch_size, "per_device_train_batch_size"),
            (grad_accumulation, "gradient_accumulation_steps"),
        ):
            if old is not None:
                setattr(self, new, old)
        for f in dataclasses.fields(self):  # null in a YAML file (the old configs' "unset"): the default
            if getattr(self, f.name) is None:
                setattr(self, f.name, field_default(f))
        problems = [f"--{name} is required" for name in ("pairs", "out") if not getattr(self, name)]
        if self.overwrite and self.resume:
            problems.append("choose one of --overwrite and --resume")
        problems += self._absorb_trl_mapping() + self._lora_problems() + self._range_problems()
        try:
            self.training_objective()
        except ConfigError as e:
            problems.append(str(e))
        require(problems)
        if self.dpo:
            from mipo import trl_fields

            self.dpo = trl_fields.check_mapping(self.training_objective().config(), self.dpo, source="dpo")

    def training_objective(self) -> Any:
        from mipo.objectives import OBJECTIVES

        return OBJECTIVES.get(self.objective)

    def _absorb_trl_mapping(self) -> list[str]:
        """Keys of ``dpo`` that are fields here (``beta``) set the field, once, type-checked."""
        from mipo import trl_fields
        from mipo.config import aliases

        own = {f.name: f for f in dataclasses.fields(self)}
        problems = []
        for key in list(self.dpo):
            name = aliases(type(self)).get(key, key)
            if name not in TRL_FIELDS:
                continue
            value = trl_fields.check_value(f"dpo: {key}", self.dpo.pop(key), _annotation(name))
            current = getattr(self, name)
            if current != field_default(own[name]) and current != value:
                problems.append(f"set {name} either as a flag or in dpo, not both")
            setattr(self, name, value)
        return problems

    def _lora_problems(self) -> list[str]:
        own = {f.name: f for f in dataclasses.fields(self)}
        changed = [flag_names(own[k])[0] for k in LORA_FIELDS if getattr(self, k) != field_default(own[k])]
        problems = []
        if self.full and changed:
            problems.append(f"--full fine-tunes all weights: drop the LoRA options {', '.join(changed)}")
        if self.full and self.merge:
            problems.append("--merge applies to a LoRA adapter; --full already writes full weights")
        return problems

    def _range_problems(self) -> list[str]:
        problems = []
        for name in ("learning_rate", "beta", "num_train_epochs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"--{name} must be > 0, got {value}")
        for name in (
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "lora_r",
            "logging_steps", "save_steps",
        ):  # fmt: skip
            value = getattr(self, name)
            if value < 1:
                problems.append(f"--{name} must be >= 1, got {value}")
        return problems

    @property
    def method(self) -> str:
        return "full" if self.full else "lora"


def _annotation(name: str) -> Any:
    import typing

    return typing.get_type_hints(TrainConfig)[name]


def device_settings(device: str) -> dict[str, Any]:
    import torch

    on_gpu = device.startswith("cuda")
    return {
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        # Recomputing activations costs a third more compute; worth it only where memory is short (a GPU).
        "gradient_checkpointing": on_gpu,
    }


def trl_settings(config: TrainConfig, objective: Any, work: Path, device: str) -> dict[str, Any]:
    """The TRL config's keyword arguments: mipo's defaults for this device and objective, then the
    TrainConfig's TRL fields, then the ``dpo`` mapping; only the fields the config class has."""
    from mipo import trl_fields

    known = trl_fields.fields(objective.config())
    settings: dict[str, Any] = {
        "output_dir": str(work / CHECKPOINTS),
        **TRL_DEFAULTS,
        **device_settings(device),
        **objective.defaults,
    }
    settings.update({name: getattr(config, name) for name in TRL_FIELDS if getattr(config, name) is not None})
    settings.setdefault("learning_rate", LEARNING_RATE[config.method])
    if config.loss_type is not None:  # DPO combines several losses (a list); SFT takes one name
        losses = [t.strip() for t in config.loss_type.split(",")]
        loss_field = trl_fields.annotations(objective.config()).get("loss_type")
        settings["loss_type"] = trl_fields.check_value(
            "loss_type", losses if len(losses) > 1 else losses[0], loss_field
        )
    settings.update(config.dpo)
    if "activation_checkpointing" in known and "activation_checkpointing" not in settings:
        # transformers 5's name; the old one still works but prints a FutureWarning, even above a one-line error
        settings["activation_checkpointing"] = settings.pop("gradient_checkpointing", None)
    return {k: v for k, v in settings.items() if k in known}


@dataclass
class TrainingJob:
    """Everything decided before anything is written: inputs read, settings checked, the folder planned."""

    config: TrainConfig
    objective: Any  # mipo.objectives.Objective
    model_source: str
    pairs: list[dict[str, Any]]
    device: str
    folder: Any  # mipo.run_folder.RunFolder
    fingerprint: dict[str, Any]


def plan_job(config: TrainConfig) -> TrainingJob:
    """Read and check every input and setting; refuse what would lose data. Writes nothing."""
    from mipo import run_folder
    from mipo.fingerprint import check_resume
    from mipo.models import adapter_base, default_device, resolve_model
    from mipo.pairs_file import read_pairs

    run_folder.refuse_inputs_inside(config.out, {"--pairs": config.pairs, "--model": config.model})
    objective = config.training_objective()
    objective.config()  # an objective whose TRL classes do not import fails here, before any folder exists
    folder = run_folder.plan(config.out, overwrite=config.overwrite, resume=config.resume)
    pairs = read_pairs(config.pairs, keep=objective.pair_fields)
    source = resolve_model(config.model)
    if adapter_base(source) and not config.full:
        raise MipoError(
            f"{config.model}: is a LoRA adapter; train a new adapter on its merged weights "
            f"({config.model}/merged, from --merge) or pass --full"
        )
    device = config.device or default_device()
    fingerprint = job_fingerprint(config, source, device)
    if folder.checkpoint:
        check_resume(
            folder.work / CHECKPOINTS / FINGERPRINT, fingerprint, what=f"the training in {config.out}"
        )
    return TrainingJob(config, objective, source, pairs, device, folder, fingerprint)


def job_fingerprint(config: TrainConfig, model_source: str, device: str) -> dict[str, Any]:
    """What the trained weights depend on: the model, the pairs, every setting that changes them, mipo."""
    import torch

    from mipo.fingerprint import fingerprint, input_identity, weights_identity

    where = ("model", "pairs", "out", "overwrite", "resume", "ref_cache", "device")
    settings = {k: v for k, v in to_dict(config).items() if k not in where}
    return fingerprint(
        model=weights_identity(model_source),
        pairs=input_identity(config.pairs),
        device=torch.device(device).type,
        settings=settings,
    )


def start_folder(job: TrainingJob) -> None:
    """(Main process.) Make the folder the run writes in and record what it is, before any training."""
    from mipo import run_folder
    from mipo.fingerprint import write_fingerprint

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

    from mipo.models import load_model
    from mipo.trainer_callbacks import MetricsCallback, use_quiet_progress

    config, objective = job.config, job.objective
    # LoRA keeps the frozen base in bf16 on a GPU; full fine-tuning keeps fp32 master weights (bf16 autocast).
    run.state["dtype"] = torch.bfloat16 if args.bf16 and not config.full else torch.float32
    model, tokenizer = load_model(config.model, device="cpu", dtype=run.state["dtype"])
    model.train()
    checkpoint = job.folder.checkpoint
    resume_step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else (0 if config.resume else None)
    metrics = MetricsCallback(job.folder.work / "metrics.jsonl", resume_step=resume_step)
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
    from mipo import run_folder
    from mipo.trainer_callbacks import plot_curves

    config, work = job.config, job.folder.work
    trainer.processing_class.save_pretrained(work)
    if config.merge:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
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
    from accelerate import PartialState

    from mipo.objectives import TrainingRun

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
    with reply_positions_only():  # the reference pass and every step: the LM head on the reply tokens only
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
    with out_of_room(job):
        trainer.save_model(str(job.folder.work))
        if state.is_main_process:
            save_outputs(job, trainer, metrics, seconds, reference)
        log.info("trained %d steps in %.1f s; wrote %s", trainer.state.global_step, seconds, config.out)
    state.wait_for_everyone()
    return Path(config.out)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="settings file (keys as below, TRL's fields included; or a dpo: mapping)",
    )
    add_config_arguments(parser, TrainConfig)
    add_trl_arguments(parser)
    parser.usage = "%(prog)s --pairs PAIRS --out OUT [--model MODEL] [options] [TRL fields]"


def add_trl_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of each objective's TRL config, under its TRL name, in a group per config class."""
    import typing

    from mipo import trl_fields
    from mipo.objectives import OBJECTIVES

    taken = {f.name for f in dataclasses.fields(TrainConfig)} | set(trl_fields.NOT_SETTABLE)
    for name in sorted(OBJECTIVES.names(), key=lambda n: n != "dpo"):
        objective = OBJECTIVES.get(name)
        config_class = objective.config()
        hints, fields = trl_fields.annotations(config_class), trl_fields.fields(config_class)
        new = [f for f in fields if f not in taken]
        if not new:
            continue
        group = parser.add_argument_group(
            f"TRL {config_class.__name__} fields (--objective {name})",
            "TRL's own names, meanings and types (each is also a YAML key); mipo's defaults where it has its own",
        )
        mipo_defaults = {**TRL_DEFAULTS, **objective.defaults}
        for field_name in new:
            f, annotation = fields[field_name], hints[field_name]
            is_bool = annotation is bool or bool in typing.get_args(annotation)
            value = mipo_defaults.get(field_name, trl_fields.default(f))
            shown = DEVICE_DEFAULTS_TEXT.get(field_name) or (None if value is None else repr(value))
            text = trl_fields.first_sentence(f.metadata.get("help", ""))
            text += f" (default: {shown})" if shown else ""
            group.add_argument(
                f"--{field_name}",
                dest=f"dpo.{field_name}",
                type=trl_fields.flag_parser(annotation),
                nargs="?" if is_bool else None,  # --flag alone means true, as with `trl dpo`
                const=True if is_bool else None,
                metavar=field_name.upper(),
                help=text.replace("%", "%%"),
            )
        taken |= set(new)


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
