"""What can change a model's replies besides the settings: the engine, the device and its dtype, the
threads and decode workers (float sums round differently when split otherwise), the CPU's kernels and the
libraries' versions. Recorded in ``results.json`` and in every resumable job's fingerprint, so that a
``--resume`` under another of these is refused, naming what differs (docs/reliability.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

# The CPU flags that choose PyTorch's kernels (and so how float sums round) on the x86 machines mipo runs on.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@cache  # the CPU does not change under a running process; a fingerprint asks several times
def cpu_summary() -> str:
    """PyTorch's CPU capability (the kernels it dispatches to) and the kernel-choosing flags present."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux
        return capability
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    present = [flag for flag in KERNEL_FLAGS if flag in flags]
    return " ".join([capability, *present])


def reply_environment(
    device: str | None, workers: int | None, backend: str = "hf", dtype: str | None = None
) -> dict[str, Any]:
    """The engine, device, dtype (``--dtype``, resolved), decode workers and threads, CPU kernels and library
    versions of a run."""
    import torch

    from mipo import versions
    from mipo.engine.dtypes import dtype_name
    from mipo.engine.models import default_device, default_dtype
    from mipo.engine.workers import default_workers

    device = device or default_device()
    workers = workers if workers is not None else default_workers(device)
    return {
        "backend": backend,
        "device": str(device).split(":")[0],
        # the weights' dtype: --dtype (auto resolved), or load_model's default where a caller names none
        "dtype": dtype_name(dtype, str(device))
        if dtype
        else str(default_dtype(str(device))).removeprefix("torch."),
        "workers": workers,
        # each decode worker runs on one thread; one worker decodes in this process, on its threads
        "torch_threads": 1 if workers > 1 else torch.get_num_threads(),
        "cpu": cpu_summary(),
        "versions": {k: v for k, v in versions().items() if k in ("mipo", "torch", "transformers", "peft")},
    }
