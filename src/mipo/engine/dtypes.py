"""Which dtype a model computes in: ``--dtype auto|float32|bfloat16`` (transformers' own name), and why.

``auto`` picks bf16 where the hardware computes it and fp32 elsewhere: on a GPU, bf16 where the card has
it natively (not where PyTorch would emulate it: V100, T4); on a CPU, bf16 only where PyTorch reports a
unit that computes it (AMX tiles, on Intel Sapphire Rapids and later, or AVX512-BF16, on Intel Cooper Lake
and AMD Zen 4 and later). On any other CPU bf16 is emulated and slower than fp32. The choice is read from
what torch itself reports, never from the CPU's name: ``torch.backends.cpu.get_cpu_capability()`` says only
"AVX512" on such machines, and oneDNN's ``_is_mkldnn_bf16_supported()`` is true on AVX-512 CPUs that emulate.

Whatever the weights' dtype, the numbers that are summed or compared are accumulated in fp32: the softmax,
top-p and context-aware contrast of the decode loop, every log-prob that is summed (PMI, scoring, DPO
reference log-probs). docs/benchmarks.md ("bf16 on a CPU") has the speed and the quality measured.
"""

from __future__ import annotations

from typing import Any

DTYPES = ("auto", "float32", "bfloat16")
GPU_ONLY_DTYPES = ("float16",)  # half precision: fine on a GPU, slow and overflow-prone on a CPU


def default_device() -> str:
    """cuda where a GPU is visible, else cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def native_bf16_unit() -> str | None:
    """The CPU unit that computes bf16 in hardware, as PyTorch reports it ("AMX", "AVX512-BF16"), or None."""
    import torch

    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return None


def auto_dtype(device: str) -> tuple[str, str]:
    """What ``--dtype auto`` picks on ``device`` and why: ``("bfloat16", "the CPU computes bf16 ...")``."""
    import torch

    if str(device).startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return "bfloat16", "the GPU computes bf16 natively"
        return "float32", "the GPU has no native bf16 (PyTorch would emulate it)"
    if str(device) != "cpu":
        return "float32", f"device {device}: mipo picks bf16 only on a CPU or a CUDA GPU that computes it"
    unit = native_bf16_unit()
    if unit:
        return "bfloat16", f"the CPU computes bf16 in hardware: {unit}"
    return (
        "float32",
        "the CPU has no bf16 unit (AVX512-BF16 or AMX): bf16 would be emulated, slower than fp32",
    )


def dtype_name(dtype: str | None, device: str) -> str:
    """The dtype a stage computes in, by name: ``dtype`` itself, or ``auto``'s choice on ``device``."""
    if dtype in (None, "auto"):
        return auto_dtype(device)[0]
    return str(dtype)


def torch_dtype(dtype: str | None, device: str) -> Any:
    """``dtype_name`` as a ``torch.dtype``."""
    import torch

    return getattr(torch, dtype_name(dtype, device))


def dtype_problems(dtype: str | None, device: str | None, backend: str = "hf") -> list[str]:
    """What makes ``--dtype`` unusable, before any model loads: an unknown name, half precision on a CPU, or
    bf16 for vLLM on a GPU that does not compute it."""
    if dtype is None:
        return []
    choices = ", ".join(DTYPES)
    if dtype not in DTYPES + GPU_ONLY_DTYPES:
        return [f"--dtype must be one of {choices}, got {dtype!r}"]
    device = str(device or default_device())
    if dtype in GPU_ONLY_DTYPES and not device.startswith("cuda"):
        return [f"--dtype {dtype} on a CPU is refused (slow there and it overflows): use one of {choices}"]
    if dtype == "bfloat16" and backend == "vllm" and device.startswith("cuda"):
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False):
            return [
                f"--dtype bfloat16 with --backend vllm: this GPU has no native bf16; use --dtype float16 or {choices}"
            ]
    return []


def dtype_report(device: str | None = None) -> str:
    """One line for ``mipo --version``: what ``--dtype auto`` picks here, and why."""
    device = str(device or default_device())
    name, reason = auto_dtype(device)
    return f"--dtype auto on {device}: {name} ({reason})"


DTYPE_HELP = (
    "the weights' dtype: auto (bf16 where the GPU or the CPU computes it in hardware, else fp32; "
    "`mipo --version` says which), float32 or bfloat16"
)
