"""Decode workers: split generation over CPU cores, one thread per worker, results in input order.

On a CPU, a decode step of a small model is many small matrix products that do not split well across
threads: at 2 threads a step reached 0.24 of the forward-pass ceiling, at 1 thread 0.52
(docs/benchmarks.md). So instead of one batch on two threads, each worker decodes its own share of the
rows on one thread: two workers ran 64 prompts x 64 tokens in 23-28 s against 38-46 s for one batch on two
threads (threads in one process measured no faster than one batch: the model's Python overhead holds the GIL).

Workers are forked processes (Linux; elsewhere one worker): a fork shares the loaded weights copy-on-write,
so a worker costs no load time. A worker that dies (killed, out of memory) loses only its share, which this
process then decodes itself, so the caller gets every result or an error, never a silent gap.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from mipo.core.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
MAX_DEFAULT_WORKERS = 8

# A worker's work: (its items, a callback taking how many items it finished) -> one result per item.
Work = Callable[[list[T], Callable[[int], None]], list[R]]


def physical_cores() -> int:
    """Cores, not hyper-threads (two hyper-threads of one core share its matrix units)."""
    seen = set()
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/core_id") as a, open(f"{topology}/physical_package_id") as b:
                seen.add((a.read().strip(), b.read().strip()))
        except OSError:
            seen.add(("cpu", str(cpu)))
    return max(1, len(seen))


def default_workers(device: str | None = None) -> int:
    """One worker per physical core the run may use (``OMP_NUM_THREADS``/``MIPO_THREADS`` cap it), capped
    at 8; one on a GPU and where processes cannot be forked."""
    if (device and not str(device).startswith("cpu")) or not _can_fork():
        return 1
    import torch

    return max(1, min(physical_cores(), torch.get_num_threads(), MAX_DEFAULT_WORKERS))


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _cuda_started() -> bool:
    """CUDA is initialised in this process: a forked child cannot use it (a GPU model decodes here, whatever
    ``--workers`` says; the replies are the same, each seeded on its own)."""
    import torch

    return torch.cuda.is_initialized()


def interleaved_shares(n: int, workers: int) -> list[list[int]]:
    """Item indices dealt to ``workers`` shares like cards (items are length-sorted: shares balance)."""
    return [list(range(k, n, workers)) for k in range(workers) if k < n]


def run_in_workers(
    work: Work,
    items: Sequence[T],
    workers: int,
    *,
    on_progress: Callable[[int], None] = lambda n: None,
) -> list[R]:
    """``work(items)`` split over ``workers`` forked processes of one torch thread each, in input order.

    ``work`` must give each item the same result whichever share it is in (mipo's sampling is seeded per
    row, so it does). With one worker, one item, or no ``fork``, ``work`` runs here on all items.
    """
    items = list(items)
    workers = min(workers, len(items))
    if workers <= 1 or not _can_fork() or _cuda_started():
        return work(items, on_progress)
    shares = interleaved_shares(len(items), workers)
    results: list[Any] = [None] * len(items)
    children, lost = _start(work, items, shares), []
    try:
        pending = {conn: k for k, (_, conn) in enumerate(children)}
        while pending:
            for conn in wait(list(pending)):
                k = pending[conn]
                done = _receive(conn, on_progress)
                if done is _STILL_RUNNING:
                    continue
                del pending[conn]
                if done is _DIED:
                    lost.append(k)
                else:
                    for index, result in zip(shares[k], done):
                        results[index] = result
    finally:
        _stop(children)
    for k in lost:
        log.warning("decode worker %d of %d died; decoding its %d rows here", k + 1, workers, len(shares[k]))
        for index, result in zip(shares[k], work([items[i] for i in shares[k]], on_progress)):
            results[index] = result
    return results


_STILL_RUNNING, _DIED = object(), object()


def _start(work: Work, items: list, shares: list[list[int]]) -> list[tuple[Any, Connection]]:
    context = multiprocessing.get_context("fork")
    children = []
    for share in shares:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(work, [items[i] for i in share], sender), daemon=True)
        process.start()
        sender.close()
        children.append((process, receiver))
    return children


def _child(work: Work, items: list, conn: Connection) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # for a torch imported by ``work`` itself
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    try:
        result = work(items, lambda n: conn.send(("progress", n)))
        conn.send(("result", result))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
        conn.send(("error", _picklable(e)))
    finally:
        conn.close()


def _picklable(error: BaseException) -> BaseException:
    """A user error goes back as it is; anything else as a RuntimeError carrying the worker's traceback."""
    from mipo.core.errors import MipoError

    if isinstance(error, MipoError):
        try:
            import pickle

            pickle.dumps(error)
            return error
        except Exception:  # noqa: BLE001
            return MipoError(str(error))
    return RuntimeError("a decode worker failed:\n" + "".join(traceback.format_exception(error)).strip())


def _receive(conn: Connection, on_progress: Callable[[int], None]) -> Any:
    try:
        kind, value = conn.recv()
    except (EOFError, OSError):
        return _DIED
    if kind == "progress":
        on_progress(value)
        return _STILL_RUNNING
    if kind == "error":
        raise value
    return value


def _stop(children: list[tuple[Any, Connection]]) -> None:
    for process, conn in children:
        if process.is_alive():
            process.terminate()
        process.join()
        conn.close()
