"""The answers without the user's context, which the context effect compares against (on by default where items
have contexts)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from pathlib import Path

from mipo.evaluation.answers import ModelSlot, run_model
from mipo.evaluation.settings import (
    NO_CONTEXT,
    EvalConfig,
    Job,
    Runs,
    measures_context_effect,
    no_context_role,
)
from mipo.evaluation.summaries import write_examples
from mipo.tasks import Task

log = logging.getLogger(__name__)


def without_context(task: Task) -> Task:
    """The task's items that carry a context, the context taken out: the same question, scored against the
    same stated preferences (a task's ``score`` reads them from the item, never from the prompt)."""
    items = [dataclasses.replace(item, context=None) for item in task.items if item.context]
    return dataclasses.replace(task, items=items)


def run_without_context(config: EvalConfig, job: Job, slot: ModelSlot) -> Runs:
    """Each role answers each such task without the context (``mipo.evaluation.context_effect``); the baseline's
    replies come from, and go to, the baseline cache. The model still loaded runs first."""
    from mipo.core.files import atomic_write_json

    bare: Runs = defaultdict(dict)
    tasks = [task for task in job.tasks if measures_context_effect(config, task)]
    if not tasks:
        return bare
    for role in sorted(job.roles, key=lambda r: job.roles[r] != slot.name):
        for task in tasks:
            cache = no_context_cache_path(job, task) if role == "baseline" else None
            if cache is not None and cache.is_file():
                log.info(
                    "%s: the baseline's replies without context come from the cache (%s)", task.name, cache
                )
                bare[task.name][role] = {int(s): rows for s, rows in json.loads(cache.read_text()).items()}
                continue
            name = job.roles[role]
            engine = slot.loaded if slot.name == name else slot.get(name)  # loads only another model
            log.info("%s: %s without the user's context (the context effect)", task.name, role)
            by_seed = run_model(config, job, without_context(task), engine, no_context_role(role))
            bare[task.name][role] = by_seed
            if cache is not None:
                atomic_write_json(cache, {str(seed): rows for seed, rows in by_seed.items()})
    return bare


def no_context_cache_path(job: Job, task: Task) -> Path | None:
    """The baseline's no-context replies, cached beside its replies with the context (same key)."""
    path = job.cache_paths.get(task.name)
    return path.parent / NO_CONTEXT / path.name if path is not None else None


def add_context_effects(config: EvalConfig, results: dict, job: Job, runs: Runs, bare: Runs) -> None:
    """Each measured task's ``context_effect`` entry in ``results``; writes the no-context examples files."""
    from mipo.evaluation.context_effect import summarize

    out = Path(config.out)
    for task in job.tasks:
        if task.name not in bare:
            continue
        kept = [i for i, item in enumerate(task.items) if item.context]
        arms = {}
        for role, by_seed in bare[task.name].items():
            arms[f"{role}_with"] = {s: [rows[i] for i in kept] for s, rows in runs[task.name][role].items()}
            arms[f"{role}_without"] = by_seed
        entry = summarize(
            arms, confidence=config.confidence, n_resamples=config.n_bootstrap, seed=config.seeds[0]
        )
        entry["examples"] = {
            role: write_examples(out, task, no_context_role(role), by_seed)
            for role, by_seed in bare[task.name].items()
        }
        results["tasks"][task.name]["context_effect"] = entry
