"""``mipo eval``: score a model (and a baseline, paired) on personalization, math, multiple choice and PMI.

``evaluate(EvalConfig(...))`` writes ``OUT/results.json`` (scores with bootstrap intervals, the paired
difference to the baseline with its p-value, settings and model identities) and one JSONL file of
examples per task and model under ``OUT/examples/``; it returns the path of ``results.json``.
The schema is documented in docs/evaluation.md. The steps, in order: check the output folder, load the
tasks, plan which model runs in which role, generate (batch by batch, saved under ``OUT/partial/`` with
the job's fingerprint so that ``--resume`` continues only the same job), score PMI under the reference,
then summarize.

Writing a task's train prompts is ``mipo.tasks.export`` (``mipo eval --export-train`` calls it);
``mipo pmi`` is ``mipo.evaluation.pmi_command``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from mipo.core.errors import ConfigError, MipoError
from mipo.evaluation.answers import ModelSlot, hf_model, other_prompts, run_model, score_pmi
from mipo.evaluation.baseline_cache import (
    baseline_cache_path,
    clear_partial,
    default_reference,
    start_partial,
    store_baseline_cache,
)
from mipo.evaluation.distillation_gap import gap_plan, measure_distillation_gaps
from mipo.evaluation.no_context import add_context_effects, run_with_wrong_context, run_without_context
from mipo.evaluation.settings import EvalConfig, Job, Runs
from mipo.evaluation.summaries import build_results
from mipo.tasks import Task

log = logging.getLogger(__name__)


def evaluate(config: EvalConfig) -> Path:
    """Evaluate ``config.model`` (and ``config.baseline``) on ``config.task``; return ``OUT/results.json``."""
    from mipo.core.files import atomic_write_json
    from mipo.core.processes import refuse_several_processes
    from mipo.engine.backends.vllm_settings import engine_options
    from mipo.evaluation.judge_task import add_judgments

    refuse_several_processes("eval")
    out = Path(config.out)
    refuse_output_holding_inputs(config)
    results_path = out / "results.json"
    if results_path.exists() and not config.overwrite:
        if config.resume:
            raise MipoError(
                f"{results_path}: this evaluation is finished, there is nothing to resume; pass --overwrite "
                "to run it again or choose another --out"
            )
        raise MipoError(
            f"{results_path} already exists; pass --overwrite to replace it or choose another --out"
        )
    job = plan(config, load_tasks(config))
    if config.cad_alpha is not None:  # before any model loads
        require_item_contexts(job.tasks)
    gap_tasks, gap_skipped = gap_plan(config, job)  # before any model loads (tokenizers only)
    start_partial(config, job)
    slot = ModelSlot(config.device, config.backend, config.dtype, **engine_options(config))
    try:
        runs, from_cache = run_models(config, job, slot)
        bare_runs = run_without_context(config, job, slot)
        wrong_runs, draws = run_with_wrong_context(config, job, slot)
        gaps = measure_distillation_gaps(config, job, runs, slot, [] if gap_skipped else gap_tasks)
        pmi_extra = score_pmi_tasks(config, job, runs, from_cache, slot)
    finally:
        slot.release()  # a vLLM engine gives its GPU memory back before the judge or the next stage
    store_baseline_cache(job, runs, from_cache)
    results = build_results(config, job, runs, from_cache, pmi_extra)
    add_context_effects(config, results, job, runs, bare_runs, wrong_runs, draws)
    for task in gap_tasks:
        results["tasks"][task.name]["distillation_gap"] = gaps.get(task.name) or {"skipped": gap_skipped}
    add_judgments(config, job.tasks, runs, results)  # judge:SOURCE, judge-check (mipo.evaluation.judge_task)
    atomic_write_json(results_path, results)
    clear_partial(job.partial)
    log.info("wrote %s", results_path)
    return results_path


def require_item_contexts(tasks) -> None:
    """``mipo eval --cad-alpha``: every item of a generated or multiple-choice task needs a context, named by task and item."""
    from mipo.core.errors import InputError

    for task in tasks:
        for item in task.items if task.kind != "pmi" else []:
            if not item.context:
                message = (
                    f"task {task.name}, item {item.id}: no context (--cad-alpha needs one in every item)"
                )
                raise InputError(task.source, message, line=item.line, field="context")


def refuse_output_holding_inputs(config: EvalConfig) -> None:
    """An ``--out`` that is, or contains, a model folder or an input file is refused before anything is
    written: ``--overwrite`` there would replace files mipo did not write."""
    out = Path(config.out).expanduser().resolve()
    inputs = {"--model": config.model, "--baseline": config.baseline, "--reference": config.reference}
    inputs["--prompts"] = config.prompts
    inputs |= {"--judge": config.judge, "--judge-template": config.judge_template}
    for name in config.task_names:
        inputs[f"--task {name}"] = name.rpartition(":")[2] or None  # file:X, judge:X and judge:file:X
    for flag, value in inputs.items():
        if not value or not Path(value).expanduser().exists():
            continue
        source = Path(value).expanduser().resolve()
        if source == out or out in source.parents:
            raise ConfigError(
                f"--out {config.out} holds an input ({flag}: {value}); choose an output folder of its own"
            )


def load_tasks(config: EvalConfig) -> list[Task]:
    from mipo.tasks import load_task

    tasks = [
        load_task(
            name,
            limit=config.limit,
            train_split=config.train_split,
            prompts=config.prompts,
            preference_types=config.preference_types or None,
        )
        for name in config.task_names
    ]
    for task in tasks:
        if task.kind == "pmi" and config.backend != "hf":
            raise ConfigError(
                f"task '{task.name}' scores log-probabilities with the model itself, which backend "
                f"{config.backend!r} cannot: use --backend hf (or evaluate it in a separate mipo eval)"
            )
        if task.kind == "pmi" and config.against == "context":
            from mipo.tasks.pmi import require_contexts

            require_contexts(task)
        elif task.kind == "pmi":  # fail before any model loads when the prompts cannot supply K others
            other_prompts(config, task)
        elif task.kind == "generate" and task.score is None:  # e.g. prism: no code checks its replies
            raise ConfigError(
                f"task '{task.name}' has no scorer: compare two models on it with --task judge:{task.name} "
                f"--baseline MODEL --judge JUDGE, or measure the objective with --task pmi --prompts {task.name}"
            )
    return tasks


def plan(config: EvalConfig, tasks: list[Task]) -> Job:
    """The roles: the model, the baseline; for pmi without a baseline, the reference's own responses."""
    roles = {"model": config.model, **({"baseline": config.baseline} if config.baseline else {})}
    reference = default_reference(config) if any(t.kind == "pmi" for t in tasks) else None
    compared = {
        t.name: roles.get("baseline")
        or (reference if t.kind == "pmi" and reference != config.model else None)
        for t in tasks
    }
    job = Job(tasks, roles, reference, compared, Path(config.out) / "partial")
    if config.cache_baseline:
        job.cache_paths = {
            t.name: baseline_cache_path(config, t, compared[t.name], reference)
            for t in tasks
            if compared[t.name]
        }
    return job


def run_models(config: EvalConfig, job: Job, slot: ModelSlot) -> tuple[Runs, set[str]]:
    """Generate and score every task for every role; the baseline's rows come from the cache when there."""
    runs: Runs = defaultdict(dict)
    from_cache: set[str] = set()  # tasks whose baseline rows (scored) came from the cache
    for task in job.tasks:
        path = job.cache_paths.get(task.name)
        if path is not None and path.is_file():
            cached = json.loads(path.read_text())
            runs[task.name]["baseline"] = {int(seed): rows for seed, rows in cached.items()}
            from_cache.add(task.name)
            log.info("%s: the baseline's scored outputs come from the cache (%s)", task.name, path)
    for role, name in job.roles.items():
        for task in job.tasks:
            if role in runs[task.name]:
                continue
            engine = slot.get(name)
            log.info("%s: %s on %d items", task.name, role, len(task.items))
            runs[task.name][role] = run_model(config, job, task, engine, role)
    for task in job.tasks:
        if task.kind == "pmi" and "baseline" not in runs[task.name] and job.compared[task.name]:
            log.info("pmi: the reference model's own responses, for comparison")
            runs[task.name]["baseline"] = run_model(config, job, task, slot.get(job.reference), "baseline")
    return runs, from_cache


def score_pmi_tasks(config: EvalConfig, job: Job, runs: Runs, from_cache: set[str], slot) -> dict[str, Any]:
    """PMI of every role's responses under the reference (the model last loaded is kept when it is it)."""
    pmi_extra: dict[str, Any] = {}
    for task in job.tasks:
        if task.kind == "pmi":
            scored = {"baseline"} if task.name in from_cache else set()
            pmi_extra = score_pmi(
                config, task, runs[task.name], *hf_model(slot.get(job.reference)), scored=scored
            )
    return pmi_extra
