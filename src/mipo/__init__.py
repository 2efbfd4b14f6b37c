"""mipo: Mutual Information Preference Optimization.

For each prompt the base model's own response is *chosen* and its response to a different prompt is
*rejected*; DPO on those pairs raises the mutual information between prompt and response.
The stages are plain functions taking a config dataclass and returning the path they wrote.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# PyTorch's CPU kernels run on OpenMP threads that, by default, spin while they wait for one another. When
# other processes share the cores, a spinning thread holds a core that the thread it waits for needs, and a
# decode step took 5-15x longer (measured on 2 shared cores). Passive threads sleep instead, at a cost of a
# few percent on an idle machine. Read when the OpenMP runtime loads (the first ``import torch``), so this
# only helps where mipo is imported before torch; set OMP_WAIT_POLICY yourself to choose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Public names, imported on first use so that ``import mipo`` stays light.
_LAZY = {
    "load_model": "mipo.engine.models",
    "build_pairs": "mipo.pairs",
    "PairsConfig": "mipo.pairs",
    "sample": "mipo.sampling",
    "SampleConfig": "mipo.sampling",
    "train": "mipo.training",
    "TrainConfig": "mipo.training",
    "evaluate": "mipo.evaluation",
    "EvalConfig": "mipo.evaluation",
}

__all__ = ["__version__", "versions", *_LAZY]


def versions() -> dict[str, str]:
    """Versions of mipo and the libraries a result depends on (recorded with every run; ``mipo --version``);
    "-" for one not installed (vllm and deepspeed are extras: docs/gpu.md)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"mipo": __version__}  # also right when run from a source tree that is not installed
    for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "vllm", "deepspeed"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mipo' has no attribute {name!r}")
