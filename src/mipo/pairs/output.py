"""A pairs run's files: the pairs file (written atomically, resumable), the reply caches beside it, and the
processes that share the work under ``accelerate launch``."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mipo.core.errors import MipoError, OutputExistsError
from mipo.pairs.config import PairsConfig
from mipo.pairs.rows import Output


def open_output(out: Path, config: PairsConfig, job: dict[str, Any], rank: int, world: int) -> Output:
    writer, done_ids = None, set()
    if rank == 0:
        from mipo.core.files import RowWriter

        writer = RowWriter(out, resume=config.resume, overwrite=config.overwrite, fingerprint=job)
        done_ids = {row.get("prompt_id", row["id"]) for row in writer.existing}
    if world > 1:
        done_ids = _broadcast(done_ids)
    return Output(writer, done_ids)


def append_responses(cache_file, cache_path: Path, keys: list[str], responses: list[list[str]]) -> None:
    from mipo.core.files import output_error

    try:
        for key, texts in zip(keys, responses):
            cache_file.write(json.dumps({"key": key, "responses": texts}, ensure_ascii=False) + "\n")
        cache_file.flush()
    except OSError as e:
        with contextlib.suppress(OSError):  # the retried flush of a full disk fails again
            cache_file.close()
        raise output_error(cache_path, e, kept=True) from None


def process_group() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier): one process, or those of ``accelerate launch`` / ``torchrun``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    state = partial_state()
    return state.process_index, state.num_processes, state.wait_for_everyone


def partial_state():
    import torch
    from accelerate import PartialState

    # Without a GPU, accelerate only joins the processes (with gloo) when told it runs on the CPU.
    return PartialState(cpu=not torch.cuda.is_available())


def _broadcast(value: Any) -> Any:
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def check_output(
    out: Path, config: PairsConfig, job: dict[str, Any], rank: int, barrier: Callable[[], None]
) -> None:
    """Refuse to replace an input or a finished output, to restart over an interrupted run unless asked, or
    to resume another job's run (the fingerprint is written with the partial file, by ``RowWriter``)."""
    from mipo.core.files import check_output_not_input, check_resume, fingerprint_path, remove_leftovers

    check_output_not_input(out, prompts=config.prompts)
    if out.exists() and not config.overwrite:
        if rank == 0:
            remove_leftovers(out, reply_cache_paths(out))
        raise OutputExistsError(out, resume=config.resume)
    leftovers = [p for p in [out.with_name(out.name + ".partial")] if p.exists()] + reply_cache_paths(out)
    if leftovers and not (config.resume or config.overwrite):
        raise MipoError(
            f"{leftovers[0]} holds an interrupted run; pass --resume to continue it or --overwrite to start again"
        )
    if leftovers and config.resume:
        check_resume(fingerprint_path(out), job, what=str(out))
    if config.overwrite and rank == 0:
        for path in leftovers:
            path.unlink()
    barrier()


def reply_cache_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.responses-{rank}.partial")


def reply_cache_paths(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.responses-*.partial")) if out.parent.is_dir() else []


def read_caches(out: Path) -> dict[str, list[str]]:
    """Responses of earlier chunks (of any process); a line cut by a kill is ignored and redone."""
    from mipo.core.files import read_complete_lines

    cached: dict[str, list[str]] = {}
    for path in reply_cache_paths(out):
        rows, _ = read_complete_lines(path)
        cached.update((row["key"], row["responses"]) for row in rows)
    return cached
