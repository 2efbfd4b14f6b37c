"""The answers with the user's context changed: without it, which the context effect compares against, and with
another user's, which the content effect compares against (both on by default where items have contexts)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from pathlib import Path

from mipo.evaluation.answers import ModelSlot, run_model
from mipo.evaluation.settings import (
    NO_CONTEXT,
    WRONG_CONTEXT,
    EvalConfig,
    Job,
    Runs,
    measures_content_effect,
    measures_context_effect,
    no_context_role,
    wrong_context_role,
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
    tasks = [task for task in job.tasks if measures_context_effect(config, task)]
    return _run_variant(config, job, slot, {task.name: without_context(task) for task in tasks}, NO_CONTEXT)


def run_with_wrong_context(config: EvalConfig, job: Job, slot: ModelSlot) -> tuple[Runs, dict[str, dict]]:
    """Each role answers each such task with another user's context (``mipo.evaluation.content_effect``),
    drawn with the first seed; cached like the no-context replies. Also returns each task's draw."""
    from mipo.evaluation.content_effect import with_wrong_context

    variants, draws = {}, {}
    for task in job.tasks:
        if measures_content_effect(config, task):
            variants[task.name], draws[task.name] = with_wrong_context(task, config.seeds[0])
    variants = {name: task for name, task in variants.items() if task.items}
    return _run_variant(config, job, slot, variants, WRONG_CONTEXT), draws


def _run_variant(config: EvalConfig, job: Job, slot: ModelSlot, variants: dict[str, Task], kind: str) -> Runs:
    """Every role answers every task of ``variants`` (the items with their context changed: ``kind``)."""
    from mipo.core.files import atomic_write_json

    answers: Runs = defaultdict(dict)
    for role in sorted(job.roles, key=lambda r: job.roles[r] != slot.name):
        for name, variant in variants.items():
            cache = variant_cache_path(job, name, kind) if role == "baseline" else None
            if cache is not None and cache.is_file():
                log.info("%s: the baseline's replies (%s) come from the cache (%s)", name, kind, cache)
                answers[name][role] = {int(s): rows for s, rows in json.loads(cache.read_text()).items()}
                continue
            model = job.roles[role]
            engine = slot.loaded if slot.name == model else slot.get(model)  # loads only another model
            log.info("%s: %s, %s", name, role, kind)
            by_seed = run_model(config, job, variant, engine, f"{role}.{kind}")
            answers[name][role] = by_seed
            if cache is not None:
                atomic_write_json(cache, {str(seed): rows for seed, rows in by_seed.items()})
    return answers


def variant_cache_path(job: Job, task_name: str, kind: str) -> Path | None:
    """The baseline's replies without the context (or with another's), cached beside its replies with the
    context (same key)."""
    path = job.cache_paths.get(task_name)
    return path.parent / kind / path.name if path is not None else None


def add_context_effects(
    config: EvalConfig, results: dict, job: Job, runs: Runs, bare: Runs, wrong: Runs, draws: dict[str, dict]
) -> None:
    """Each measured task's ``context_effect`` entry in ``results`` (with the wrong-context control's content
    effect where it ran); writes the no-context and wrong-context examples files."""
    from mipo.evaluation.context_effect import summarize

    out = Path(config.out)
    for task in job.tasks:
        if task.name not in bare and task.name not in wrong:
            continue
        with_context = runs[task.name]
        kept = [i for i, item in enumerate(task.items) if item.context]
        arms = {}
        for role, by_seed in bare.get(task.name, {}).items():
            arms[f"{role}_with"] = _items(with_context[role], kept)
            arms[f"{role}_without"] = by_seed
        own_wrong = {}
        drawn = draws.get(task.name, {})
        answered = [i for i, item in enumerate(task.items) if str(item.id) in drawn]
        for role, by_seed in wrong.get(task.name, {}).items():
            own_wrong[f"{role}_own"] = _items(with_context[role], answered)
            own_wrong[f"{role}_wrong"] = by_seed
        entry = summarize(
            arms,
            wrong=own_wrong,
            confidence=config.confidence,
            n_resamples=config.n_bootstrap,
            seed=config.seeds[0],
        )
        entry["examples"] = {
            role: write_examples(out, task, no_context_role(role), by_seed)
            for role, by_seed in bare.get(task.name, {}).items()
        }
        if task.name in wrong:
            entry["wrong_context"] = {
                "seed": config.seeds[0],
                "drawn": drawn,  # item id -> the item whose context it was answered with
                "examples": {
                    role: write_examples(out, task, wrong_context_role(role), by_seed)
                    for role, by_seed in wrong[task.name].items()
                },
            }
        results["tasks"][task.name]["context_effect"] = entry


def _items(by_seed: dict[int, list], indices: list[int]) -> dict[int, list]:
    return {seed: [rows[i] for i in indices] for seed, rows in by_seed.items()}
