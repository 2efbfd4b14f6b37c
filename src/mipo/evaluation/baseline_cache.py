"""What makes two evaluations the same work: the job's fingerprint, the baseline's answers kept for reuse, and the
partial files a killed run resumes from."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mipo import __version__
from mipo.core.errors import MipoError
from mipo.evaluation.settings import (
    EvalConfig,
    Job,
    Runs,
    ScoringSettings,
    measures_content_effect,
    measures_context_effect,
    no_context_role,
    wrong_context_role,
)
from mipo.tasks import Task

log = logging.getLogger(__name__)


def start_partial(config: EvalConfig, job: Job) -> None:
    """Resume the saved batches of the same job, or start afresh; record the job's fingerprint.

    A resume whose fingerprint differs (another model, other items, another seed...) is refused with one
    line naming what differs, unless ``--overwrite`` asks to start again.
    """
    from mipo.core.files import check_resume, write_fingerprint

    partial = job.partial
    record = partial / FINGERPRINT
    fp = job_fingerprint(config, job)
    holds = partial.is_dir() and any(partial.iterdir())
    if holds and config.resume:
        try:
            check_resume(record, fp, what=f"the evaluation in {config.out}")
            return
        except MipoError:
            if not config.overwrite:
                raise
            log.info("%s holds another evaluation; starting again (--overwrite)", partial)
    elif holds and not config.overwrite:
        raise MipoError(
            f"{partial} holds an interrupted evaluation; pass --resume to continue it or --overwrite to "
            "start again"
        )
    clear_partial(partial)
    write_fingerprint(record, fp)
    files = [
        partial_file(job, task, role, seed).name + ".partial"
        for task, role, seed in _partial_keys(config, job)
    ]
    write_fingerprint(partial / MANIFEST, {"files": files})


def store_baseline_cache(job: Job, runs: Runs, from_cache: set[str]) -> None:
    from mipo.core.files import atomic_write_json

    for task in job.tasks:
        path = job.cache_paths.get(task.name)
        if path is not None and task.name not in from_cache:
            atomic_write_json(path, {str(seed): rows for seed, rows in runs[task.name]["baseline"].items()})


def model_identity(name: str) -> dict[str, Any]:
    from mipo.engine.models import adapter_base, resolve_model

    source = resolve_model(name)
    return {"name": name, "source": source, "adapter_base": adapter_base(source)}


def default_reference(config: ScoringSettings) -> str:
    from mipo.engine.models import adapter_base, resolve_model

    return config.reference or config.baseline or adapter_base(resolve_model(config.model)) or config.model


def items_identity(task: Task) -> list[list[Any]]:
    """The texts, not only the ids: an edited prompts or items file is another job."""
    return [[i.id, i.prompt, i.context, i.system, i.answer, i.choices] for i in task.items]


OUTPUT_SETTINGS = ("seeds", "top_p", "max_new_tokens", "batch_size", "mc_mode", "k", "context_mode")


def job_fingerprint(config: EvalConfig, job: Job) -> dict[str, Any]:
    """Everything that changes a generated row: model weights, items, sampling settings, and the engine,
    threads, workers, CPU kernels and versions it runs with (``mipo.engine.environment``)."""
    from mipo.core.fingerprint import digest, fingerprint, weights_identity
    from mipo.engine.cad import cad_settings
    from mipo.engine.environment import reply_environment
    from mipo.engine.models import resolve_model

    names = {**job.roles, **({"reference": job.reference} if job.reference else {})}
    return fingerprint(
        **{role: weights_identity(resolve_model(name)) for role, name in names.items()},
        items={task.name: digest(items_identity(task)) for task in job.tasks},
        temperature=config.sampling_temperature,
        **{name: getattr(config, name) for name in OUTPUT_SETTINGS},
        against=config.against,
        context_effect=config.context_effect,
        wrong_context=config.wrong_context,
        **cad_settings(
            getattr(config, "cad_alpha", None),
            getattr(config, "cad_plausibility", None),
            getattr(config, "cad_lift_once", False),
        ),
        environment=reply_environment(config.device, config.workers, config.backend, config.dtype),
        **({"vllm": config.vllm} if config.vllm else {}),  # the vLLM engine's settings, where given
    )


def baseline_cache_path(config: EvalConfig, task: Task, name: str, reference: str | None) -> Path:
    """Where the scored rows of ``name`` on ``task`` with these settings are kept (see ``cache_baseline``)."""
    from mipo.core.fingerprint import digest, weights_identity
    from mipo.engine.environment import reply_environment
    from mipo.engine.models import cache_dir, resolve_model

    fields = {
        "mipo_version": __version__,
        "model": weights_identity(resolve_model(name)),
        "task": task.name,
        "items": items_identity(task),
        "prompts": config.prompts,
        "temperature": config.sampling_temperature,
        **{k: getattr(config, k) for k in ("limit", "score_batch_size", "train_split", "preference_types")},
        **{k: getattr(config, k) for k in OUTPUT_SETTINGS},
        "environment": reply_environment(config.device, config.workers, config.backend, config.dtype),
        **({"vllm": config.vllm} if config.vllm else {}),
    }
    if task.kind == "pmi":
        fields.update(k=config.k, reference=weights_identity(resolve_model(reference)))
        if config.against != "prompts":  # the key of a prompts-PMI entry stays what it was
            fields.update(against=config.against)
    return cache_dir() / "eval" / f"{digest(fields, 32)}.json"


FINGERPRINT = "fingerprint.json"  # in OUT/partial: the job whose batches the folder holds


MANIFEST = "files.json"  # in OUT/partial: the files mipo wrote there (the only ones it ever deletes)


def _partial_keys(config: EvalConfig, job: Job) -> list[tuple[Task, str, int]]:
    seeds = config.seeds[:1] if config.sampling_temperature == 0 else config.seeds
    return [
        (task, role, seed)
        for task in job.tasks
        for role in (
            "model",
            "baseline",
            *(no_context_role(r) for r in ("model", "baseline") if measures_context_effect(config, task)),
            *(wrong_context_role(r) for r in ("model", "baseline") if measures_content_effect(config, task)),
        )
        for seed in seeds
    ]


def partial_file(job: Job, task: Task, role: str, seed: int) -> Path:
    return job.partial / f"{task_slug(task.name)}.{role}.seed{seed}.jsonl"


def clear_partial(partial: Path) -> None:
    """Delete what mipo wrote in ``partial`` (listed in its manifest), then the folder if that empties it."""
    from mipo.core.files import read_fingerprint

    listed = (read_fingerprint(partial / MANIFEST) or {}).get("files", [])
    for name in [*listed, FINGERPRINT, MANIFEST]:
        (partial / Path(name).name).unlink(missing_ok=True)
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()


def task_slug(task_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task_name.replace("file:", "file-"))[:80]
