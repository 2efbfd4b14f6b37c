"""Generation backends: the engines that answer chat conversations, one module per backend.

A backend registers a loader, ``load(model, *, device=None, seed=0, dtype=None) -> Engine``, under its name; an
``Engine`` answers conversations with the sampling settings of a ``GenerationJob``:

    engine = load_engine("hf", "smollm2-135m")            # or "vllm", or a backend of your own
    replies = engine.generate(conversations, num_samples=1, temperature=0.1, top_p=0.9,
                              max_new_tokens=256, seed=0)   # -> one list of replies per conversation

``mipo pairs``, ``mipo sample`` (and ``mipo eval``, ``mipo pmi``) look the name up here, so ``--backend``
lists every registered engine and adding one is one module (docs/extending/backends.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from mipo.core.registry import Registry

if TYPE_CHECKING:
    from mipo.engine.generation import Conversation, GenerationStats


class Engine(Protocol):
    """A loaded model that answers conversations."""

    tokenizer: Any  # the model's chat tokenizer (prompt lengths are counted with it); None if it has none
    context_length: int | None  # the longest prompt + reply the model takes, in tokens (None: no limit known)

    def generate(
        self,
        conversations: list[Conversation],
        *,
        num_samples: int = 1,
        temperature: float = 0.1,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
        seed: int = 0,
        batch_size: int = 64,
        stats: GenerationStats | None = None,
        progress: bool = False,
        workers: int | None = None,
    ) -> list[list[str]]:
        """``num_samples`` replies per conversation, in input order; the same seed gives the same replies.

        ``workers``: decode processes on a CPU, for an engine that has them (``hf``); others ignore it. A
        reply should not depend on the batch size, the workers, or the other conversations of the call."""
        ...


BACKENDS: Registry[Any] = Registry("generation backend", "mipo.engine.backends")


def load_engine(
    name: str,
    model: Any,
    *,
    device: str | None = None,
    seed: int = 0,
    dtype: str | None = None,
    **options: Any,
) -> Engine:
    """Load ``model`` (a built-in name, a folder or a Hub id) with the backend registered as ``name``.

    ``dtype``: ``--dtype`` (auto, float32, bfloat16; ``mipo.engine.dtypes``). A backend whose loader takes no
    ``dtype`` (one written before it existed) picks its own under ``auto``, and refuses any other choice.
    ``options``: what the stage knows of the engine it needs (``engine_settings``: the stage's ``vllm``
    mapping; ``max_new_tokens``); each goes to a loader that names it among its keyword arguments."""
    import inspect

    from mipo.core.errors import ConfigError

    loader = BACKENDS.get(name)
    accepted = inspect.signature(loader).parameters
    chosen = {k: v for k, v in options.items() if k in accepted}
    if "dtype" in accepted:
        return loader(model, device=device, seed=seed, dtype=dtype, **chosen)
    if dtype not in (None, "auto"):
        raise ConfigError(
            f"--dtype {dtype}: backend {name!r} takes no dtype (its loader has no dtype argument)"
        )
    return loader(model, device=device, seed=seed, **chosen)


def close_engine(engine: Any) -> None:
    """Give an engine's memory back now (an engine with a ``close`` method: ``vllm``); others are freed
    when they are no longer referenced."""
    close = getattr(engine, "close", None)
    if close is not None:
        close()


def release_gpu_memory() -> None:
    """Collect garbage and empty PyTorch's CUDA cache, so the next engine or trainer finds the memory free
    (``mipo run`` calls it between stages)."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
