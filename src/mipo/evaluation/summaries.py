"""``results.json`` and the per-example files: each task's scores, paired differences and confidence intervals."""

from __future__ import annotations

import datetime
from collections import defaultdict
from pathlib import Path
from typing import Any

from mipo import __version__
from mipo.core.config import to_dict
from mipo.engine.environment import reply_environment
from mipo.evaluation.baseline_cache import model_identity, task_slug
from mipo.evaluation.settings import EvalConfig, Job, Rows, Runs
from mipo.tasks import Task


def build_results(
    config: EvalConfig, job: Job, runs: Runs, from_cache: set[str], pmi_extra
) -> dict[str, Any]:
    return {
        "mipo_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(config),
        "settings": {
            "temperature": config.sampling_temperature,
            "top_p": config.top_p,
            "max_new_tokens": config.max_new_tokens,
            "seeds": config.seeds,
            "limit": config.limit,
            "mc_mode": config.mc_mode,
            "k": config.k,
            "context_mode": config.context_mode,
            "preference_types": config.preference_types or "all",
            "confidence": config.confidence,
            "n_bootstrap": config.n_bootstrap,
        },
        # what can change the replies besides the settings (docs/reliability.md: what is reproduced where)
        "environment": {
            **reply_environment(config.device, config.workers, config.backend, config.dtype),
            "batch_size": config.batch_size,
            **({"vllm": config.vllm} if config.vllm else {}),  # the vLLM engine's settings, where given
        },
        "baseline_from_cache": sorted(from_cache),
        "models": {
            "model": model_identity(config.model),
            "baseline": model_identity(config.baseline) if config.baseline else None,
            "reference": model_identity(job.reference) if job.reference else None,
        },
        "tasks": {
            task.name: task_entry(config, job, task, runs[task.name], pmi_extra if task.kind == "pmi" else {})
            for task in job.tasks
        },
    }


def task_entry(config: EvalConfig, job: Job, task: Task, runs: dict[str, dict[int, Rows]], pmi_extra) -> dict:
    """One task's results; writes its examples files."""
    from mipo.core.stats import mean_ci, paired_difference

    out = Path(config.out)
    stats = {"confidence": config.confidence, "n_resamples": config.n_bootstrap, "seed": config.seeds[0]}
    reference = job.reference if task.kind == "pmi" else None
    entry: dict[str, Any] = {
        "n": len(task.items),
        "metric": task.metric,
        "source": task.source,
        "kind": task.kind,
    }
    entry["models"] = {"model": config.model, "baseline": None, "reference": reference}
    if task.kind == "choice":
        entry["mc_mode"] = config.mc_mode
    if task.kind == "pmi":
        entry["against"] = config.against
    entry["examples"] = {}
    for role, by_seed in runs.items():
        entry["models"][role] = job.roles.get(role, job.reference)
        entry[role] = summary(config, task, by_seed)
        entry["examples"][role] = write_examples(out, task, role, by_seed)
    if "baseline" in runs:
        entry["difference"] = paired_difference(
            item_scores(runs["model"]), item_scores(runs["baseline"]), **stats
        )
    if pmi_extra:
        entry["pairs"] = {
            "chosen": mean_ci(pmi_extra["chosen"], **stats),
            "rejected": mean_ci(pmi_extra["rejected"], **stats),
            "difference": paired_difference(pmi_extra["chosen"], pmi_extra["rejected"], **stats),
        }
    return entry


def write_examples(out: Path, task: Task, role: str, by_seed: dict[int, Rows]) -> str:
    from mipo.core.files import RowWriter

    path = out / "examples" / f"{task_slug(task.name)}.{role}.jsonl"
    with RowWriter(path, overwrite=True) as writer:
        for rows in by_seed.values():
            for row in rows:
                writer.write(row)
    return str(path.relative_to(out))


def item_scores(by_seed: dict[int, Rows]) -> list[float]:
    """Each item's score averaged over seeds (items are the unit of the statistics)."""
    seeds = list(by_seed)
    return [sum(by_seed[s][i]["score"] for s in seeds) / len(seeds) for i in range(len(by_seed[seeds[0]]))]


def summary(config: EvalConfig, task: Task, by_seed: dict[int, Rows]) -> dict[str, Any]:
    from mipo.core.stats import histogram, mean_ci

    scores = item_scores(by_seed)
    result = mean_ci(
        scores, confidence=config.confidence, n_resamples=config.n_bootstrap, seed=config.seeds[0]
    )
    result["per_seed"] = {str(s): sum(r["score"] for r in rows) / len(rows) for s, rows in by_seed.items()}
    if all("preferences" in row for rows in by_seed.values() for row in rows):  # prefs, ifeval
        per_type: dict[str, list[bool]] = defaultdict(list)
        for rows in by_seed.values():
            for row in rows:
                for verdict in row["preferences"]:
                    per_type[verdict["type"]].append(verdict["followed"])
        result["per_preference"] = {
            t: {"mean": sum(v) / len(v), "n": len(v)} for t, v in sorted(per_type.items())
        }
    if task.kind == "pmi":
        result["values"] = scores
        result["histogram"] = histogram(scores)
    return result
