"""Processes started together by ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE``, ``RANK``): which
commands share out their work over them (``mipo pairs``, ``mipo train``) and which refuse them, since every
process would write the same files."""

from __future__ import annotations

import os

from mipo.core.errors import ConfigError


def world_size() -> int:
    """Processes started together; 1 in a plain run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def refuse_several_processes(command: str) -> None:
    """A one-line error for a command that runs in one process, started as several."""
    if world_size() > 1:
        raise ConfigError(
            f"mipo {command} runs in one process, but {world_size()} were started (WORLD_SIZE): run it without "
            "accelerate launch or torchrun; for several GPUs use --backend vllm with vllm: "
            "{tensor_parallel_size: N} (mipo pairs and mipo train do share out over processes)"
        )
