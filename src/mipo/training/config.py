"""``mipo train``'s settings: mipo's own (``TrainConfig``) and every ``DPOConfig`` field under TRL's name, with
defaults per device and method."""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

from mipo.core.config import (
    field_default,
    flag_names,
    option,
    require,
)
from mipo.core.errors import ConfigError
from mipo.engine.dtypes import DTYPE_HELP, dtype_problems
from mipo.engine.models import DEFAULT_MODEL
from mipo.formats.run_folder import CHECKPOINTS

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
    "bf16": "from --dtype: True where bf16 is chosen (auto: where the GPU or CPU computes it)",
    "activation_checkpointing": "True on a GPU only",
}


# TrainConfig fields that are TRL config fields of the same name and meaning
TRL_FIELDS = (
    "learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "max_length", "beta", "loss_type", "seed", "max_steps", "logging_steps", "save_steps",
)  # fmt: skip


# TRL 1.x's DPOTrainer reads label_smoothing only in these losses (rDPO, EXO, AOT); with sigmoid (the default),
# ipo or sigmoid_norm it changes nothing, so mipo refuses it there rather than train as if it did.
LABEL_SMOOTHING_LOSSES = ("robust", "exo_pair", "aot", "aot_unpaired")


def is_trl_field(name: str) -> bool:
    """Whether some registered objective's TRL config has a field ``name`` (a YAML key mipo passes on)."""
    from mipo.training import trl_fields
    from mipo.training.objectives import OBJECTIVES

    return any(name in trl_fields.fields(OBJECTIVES.get(o).config()) for o in OBJECTIVES.names())


@dataclass
class TrainConfig:
    model: str = option(DEFAULT_MODEL, "model to train: a built-in name, a model folder or a Hub id")
    pairs: str = option(None, "preference pairs: JSONL or Parquet in TRL's format (prompt, chosen, rejected)", required=True)  # fmt: skip
    out: str = option(None, "output folder (a Hugging Face model folder plus metrics)", required=True)
    objective: str = option("dpo", "training objective: dpo, sft (on the chosen responses alone), infonce, sami, cca, guidance (distils context-aware decoding; docs/training.md), or a registered one")  # fmt: skip
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
    beta: float = option(0.1, "DPO beta (the paper's); also CCA's beta", underscore=True)
    loss_type: str | None = option(None, "loss(es), comma-separated; any of the objective's TRL loss_type values", underscore=True, default_text="TRL's: sigmoid for dpo")  # fmt: skip
    seed: int = option(42, "random seed", underscore=True)
    max_steps: int = option(-1, "stop after this many optimizer steps (overrides epochs; -1: no limit)", underscore=True)  # fmt: skip
    logging_steps: int = option(1, "a metrics row every this many steps", underscore=True)
    save_steps: int = option(50, "a resumable checkpoint every this many steps", underscore=True)
    merge: bool = option(False, "also write merged full weights to OUT/merged (LoRA)", negatable=False)
    ref_cache: bool = option(True, "cache the reference log-probs on disk and reuse them")
    share_prompt: bool = option(True, "DPO: score each pair's prompt once, the chosen and the rejected reply attending to one copy (the same log-probs for fewer tokens; sdpa or eager attention)")  # fmt: skip
    device: str | None = option(None, "cpu or cuda", default_text="cuda if available, else cpu")
    dtype: str = option("auto", DTYPE_HELP + "; LoRA keeps a bf16 base with fp32 adapters, --full fp32 master weights under bf16 autocast")  # fmt: skip
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
        problems += dtype_problems(self.dtype, self.device)
        try:
            self.training_objective()
        except ConfigError as e:
            problems.append(str(e))
        require(problems)
        if self.dpo:
            from mipo.training import trl_fields

            self.dpo = trl_fields.check_mapping(self.training_objective().config(), self.dpo, source="dpo")
            require(loss_control_problems(self.loss_type, self.dpo))

    def training_objective(self) -> Any:
        from mipo.training.objectives import OBJECTIVES

        return OBJECTIVES.get(self.objective)

    def _absorb_trl_mapping(self) -> list[str]:
        """Keys of ``dpo`` that are fields here (``beta``) set the field, once, type-checked."""
        from mipo.core.config import aliases
        from mipo.training import trl_fields

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
        if self.device not in (None, "cpu", "cuda"):  # the Trainer takes a device type, not a device
            problems.append(
                f"--device {self.device}: mipo train takes cpu or cuda; choose the GPU with CUDA_VISIBLE_DEVICES "
                "(e.g. CUDA_VISIBLE_DEVICES=1 mipo train ...), several with accelerate launch"
            )
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


def loss_control_problems(loss_type: str | None, trl_values: dict[str, Any]) -> list[str]:
    """``label_smoothing`` where TRL would ignore it or outside what its losses take, ``ld_alpha`` outside
    [0, 1] (TRL 1.x checks neither before training)."""
    problems = []
    losses = [t.strip() for t in (loss_type or "sigmoid").split(",")]
    smoothing = trl_values.get("label_smoothing") or 0.0
    if smoothing and not set(losses) & set(LABEL_SMOOTHING_LOSSES):
        problems.append(
            f"--label_smoothing {smoothing} changes nothing with --loss_type {','.join(losses)}: TRL reads it "
            f"only with --loss_type {', '.join(LABEL_SMOOTHING_LOSSES)} (robust: rDPO; exo_pair: EXO)"
        )
    elif not 0 <= smoothing < 0.5:
        problems.append(f"--label_smoothing must be in [0, 0.5), got {smoothing}")
    ld_alpha = trl_values.get("ld_alpha")
    if ld_alpha is not None and not 0 <= ld_alpha <= 1:
        problems.append(f"--ld_alpha must be in [0, 1], got {ld_alpha}")
    return problems


def _annotation(name: str) -> Any:
    import typing

    return typing.get_type_hints(TrainConfig)[name]


def device_settings(device: str, dtype: str = "auto") -> dict[str, Any]:
    """``dtype`` (``--dtype``) becomes TRL's ``bf16``/``fp16``: mixed precision, on a GPU or a CPU."""
    from mipo.engine.dtypes import dtype_name

    on_gpu = device.startswith("cuda")
    chosen = dtype_name(dtype, device)
    return {
        "use_cpu": not on_gpu,
        "bf16": chosen == "bfloat16",
        "fp16": chosen == "float16",
        # Recomputing activations costs a third more compute; worth it only where memory is short (a GPU).
        "activation_checkpointing": on_gpu,
    }


def trl_settings(config: TrainConfig, objective: Any, work: Path, device: str) -> dict[str, Any]:
    """The TRL config's keyword arguments: mipo's defaults for this device and objective, then the
    TrainConfig's TRL fields, then the ``dpo`` mapping; only the fields the config class has."""
    from mipo.training import trl_fields

    known = trl_fields.fields(objective.config())
    settings: dict[str, Any] = {
        "output_dir": str(work / CHECKPOINTS),
        **TRL_DEFAULTS,
        **device_settings(device, config.dtype),
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
    if "gradient_checkpointing" in config.dpo and "activation_checkpointing" not in config.dpo:
        # A user's old name for transformers 5's activation_checkpointing: passed under the new name (the old one
        # still works but prints a FutureWarning, even above a one-line error), over mipo's default for the device.
        settings["activation_checkpointing"] = settings.pop("gradient_checkpointing")
    return {k: v for k, v in settings.items() if k in known}
