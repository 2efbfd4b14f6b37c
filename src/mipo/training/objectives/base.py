"""What a training objective is: how pairs become the trainer's rows, and which TRL config and trainer run.

An objective is one module in this package (or anywhere, registered the same way) that registers an
``Objective`` under its name in ``OBJECTIVES``; ``mipo train --objective NAME`` looks it up. The TRL classes
are named as ``"module:Class"`` strings so that listing the objectives (``mipo train --help``) or validating
a config does not import TRL.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mipo.core.registry import Registry


@dataclass
class TrainingRun:
    """What an objective's hooks may read (and, in ``state``, keep between them) during one ``mipo train``."""

    config: Any  # the TrainConfig
    model_source: str  # the resolved model folder or Hub id
    device: str
    trl_settings: dict[str, Any]  # the keyword arguments of the TRL config, before it is built
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """One training objective.

    ``config_class`` and ``trainer_class``: TRL's classes, as classes or ``"module:Class"`` strings.
    ``prepare_rows``: the pairs (``{prompt, chosen, rejected}``, see ``mipo.formats.pairs_file``) -> the rows of the
    trainer's dataset. ``defaults``: this objective's TRL settings over mipo's common ones (a user's win).
    ``before_trainer(run)``: may change ``run.trl_settings`` before the TRL config is built.
    ``after_trainer(trainer, run) -> dict``: runs once the trainer exists (the DPO reference log-probs); what
    it returns is recorded as ``reference_log_probs`` in ``train_config.json``.
    ``pair_fields``: fields of the pairs file beyond prompt/chosen/rejected that every row must have and that
    ``prepare_rows`` receives (``negative_prompt`` for InfoNCE and SAMI); checked before any model loads.
    ``pair_flags``: optional true/false fields of the pairs file that ``prepare_rows`` receives where a row has
    them (``negative_context`` for ``guidance --preserve``).
    ``refuses_zero3``: why the objective cannot run under DeepSpeed ZeRO-3 (empty: it can); such a launch is
    refused before any model loads.
    """

    config_class: type | str
    trainer_class: type | str
    prepare_rows: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    before_trainer: Callable[[TrainingRun], None] | None = None
    after_trainer: Callable[[Any, TrainingRun], dict[str, Any]] | None = None
    pair_fields: tuple[str, ...] = ()
    pair_flags: tuple[str, ...] = ()
    refuses_zero3: str = ""

    def config(self) -> type:
        return _load(self.config_class)

    def trainer(self) -> type:
        return _load(self.trainer_class)


def _load(target: type | str) -> type:
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


OBJECTIVES: Registry[Objective] = Registry("training objective", "mipo.training.objectives")
