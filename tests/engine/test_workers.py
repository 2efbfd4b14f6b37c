"""Decode workers: forked processes, results in input order, a killed worker's share redone here."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from mipo.core.errors import ConfigError, MipoError
from mipo.engine.workers import check_workers, interleaved_shares, run_in_workers

PARENT = os.getpid()


def squares(items, progress):
    out = []
    for x in items:
        out.append((x * x, os.getpid()))
        progress(1)
    return out


def test_results_come_back_in_input_order_from_several_processes():
    seen = []
    out = run_in_workers(squares, list(range(10)), 3, on_progress=seen.append)
    assert [value for value, _ in out] == [x * x for x in range(10)]
    pids = {pid for _, pid in out}
    assert len(pids) == 3 and PARENT not in pids
    assert sum(seen) == 10


def test_one_worker_or_one_item_runs_here():
    assert {pid for _, pid in run_in_workers(squares, [1, 2, 3], 1)} == {PARENT}
    assert run_in_workers(squares, [4], 4) == [(16, PARENT)]
    assert run_in_workers(squares, [], 2) == []


def test_once_cuda_is_initialised_the_work_runs_here_not_in_forks(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a model on the GPU: forks cannot use it
    assert {pid for _, pid in run_in_workers(squares, list(range(6)), 3)} == {PARENT}


def die_on_three(items, progress):
    if os.getpid() != PARENT and 3 in items:
        os.kill(os.getpid(), signal.SIGKILL)
    return squares(items, progress)


def test_a_killed_worker_loses_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="mipo.engine.workers"):
        out = run_in_workers(die_on_three, list(range(8)), 2)
    assert [value for value, _ in out] == [x * x for x in range(8)]
    assert "died; decoding its 4 rows here" in caplog.text
    assert {pid for value, pid in out if value in (1, 9, 25, 49)} == {PARENT}  # the share of 1, 3, 5, 7


def fail(items, progress):
    raise MipoError("bad row in the share")


def test_an_error_in_a_worker_is_raised_here():
    with pytest.raises(MipoError, match="bad row in the share"):
        run_in_workers(fail, [1, 2], 2)


def test_worker_counts():
    assert interleaved_shares(5, 2) == [[0, 2, 4], [1, 3]]
    assert interleaved_shares(1, 3) == [[0]]
    check_workers(None)
    check_workers(1)
    with pytest.raises(ConfigError, match="workers must be at least 1, got 0"):
        check_workers(0)
