"""``mipo eval``: score a model (and a baseline, paired) on personalization, math, multiple choice and PMI.

``evaluate(EvalConfig(...))`` writes ``OUT/results.json`` (scores with bootstrap intervals, the paired
difference to the baseline with its p-value, settings and model identities) and one JSONL file of
examples per task and model under ``OUT/examples/``; it returns the path of ``results.json``.
The schema is documented in docs/evaluation.md. The steps, in order: check the output folder, load the
tasks, plan which model runs in which role, generate (batch by batch, saved under ``OUT/partial/`` with
the job's fingerprint so that ``--resume`` continues only the same job), score PMI under the reference,
then summarize.

Writing a task's train prompts is ``mipo.tasks.export`` (``mipo eval --export-train`` calls it);
``mipo pmi`` is ``mipo.pmi_command``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipo import __version__
from mipo.backends import BACKENDS
from mipo.config import option, require, to_dict
from mipo.errors import ConfigError, MipoError
from mipo.judges.settings import JudgeSettings
from mipo.models import DEFAULT_MODEL
from mipo.tasks import CONTEXT_MODES, Task, split_task_list, task_list_help
from mipo.tasks.pmi import PMI_AGAINST

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
Runs = dict[str, dict[str, dict[int, Rows]]]  # task name -> role -> seed -> one row per item


@dataclass
class ScoringSettings:
    """What ``mipo eval`` and ``mipo pmi`` share: the models compared, the sampling, the statistics."""

    model: str = option(
        DEFAULT_MODEL, "the model to evaluate: a built-in name, a folder (LoRA adapters too) or a Hub id"
    )
    baseline: str | None = option(
        None, "a second model evaluated on the same items and seeds; reports the paired difference"
    )
    reference: str | None = option(
        None,
        "pmi: the reference model π_ref (default: the baseline, else a LoRA adapter's base, else the model)",
    )
    out: str = option("runs/eval", "output folder: results.json and examples/*.jsonl")
    limit: int | None = option(None, "evaluate the first N items of each task")
    seeds: list = option([0], "sampling seeds; each repeats the sampling, per-item scores average over them")
    temperature: float = option(0.1, "sampling temperature (the paper's 0.1); 0 is greedy")
    top_p: float = option(0.9, "nucleus sampling mass (the paper's 0.9)")
    greedy: bool = option(False, "greedy decoding (same as --temperature 0)")
    max_new_tokens: int = option(256, "longest reply, in tokens")
    batch_size: int = option(64, "prompts generated together (a batch is saved when it ends: --resume)")
    workers: int | None = option(
        None, "hf on a CPU: decode workers of one thread each (default: one per core; 1 = this process only)"
    )
    score_batch_size: int = option(8, "sequences scored together (pmi, --mc-mode loglik)")
    k: int = option(8, "pmi: other prompts whose likelihood of a response estimates its marginal")
    prompts: str | None = option(
        None,
        "pmi: held-out prompts: a prompt-records or pairs file, or a task name (see --task) for its test "
        "items (default: prefs)",
    )
    score_pairs: bool = option(False, "pmi with a pairs file: also score its chosen and rejected responses")
    against: str = option(
        "prompts",
        "pmi: the PMI of a reply against other prompts (log π(y|x) − log mean_k π(y|x'_k)), or against the "
        "user's context (log π(y|x,c) − log π(y|x): the items need a context)",
        choices=PMI_AGAINST,
    )
    train_split: float = option(0.2, "gsm8k: share of questions held apart as MIPO prompts (never evaluated)")
    context_mode: str = option(
        "system",
        "where a record's user context goes: a system message, or before the question",
        choices=CONTEXT_MODES,
    )
    preference_types: list = option(
        [], "prefs (and pmi's default prompts): only these preference types (default: all)"
    )
    n_bootstrap: int = option(10_000, "bootstrap resamples for the confidence intervals")
    confidence: float = option(0.95, "confidence level of the intervals")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cuda when available)")
    backend: str = option(
        "hf", "generation engine (mipo.backends; log-prob scoring needs hf)", choices=BACKENDS
    )
    overwrite: bool = option(False, "replace an existing results.json in --out")
    resume: bool = option(
        False,
        "continue an evaluation that was interrupted: generated batches saved in OUT/partial/ are read back",
    )
    cache_baseline: bool = option(
        True,
        "reuse the baseline's scored outputs from an earlier run with the same model, items and settings "
        "($MIPO_CACHE/eval): comparing several models with one base model runs the base model once",
    )
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        require(self.problems())

    def problems(self) -> list[str]:
        """Every invalid setting, collected (subclasses add theirs)."""
        problems = []
        try:
            self.seeds = [int(s) for s in self.seeds]
        except (TypeError, ValueError):
            problems.append(f"seeds must be integers, got {self.seeds!r}")
        if not self.seeds:
            problems.append("seeds: give at least one seed")
        if self.limit is not None and self.limit < 1:
            problems.append("limit must be at least 1")
        if self.temperature < 0:
            problems.append("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        for name in ("max_new_tokens", "batch_size", "score_batch_size", "k", "n_bootstrap"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if not 0 < self.confidence < 1:
            problems.append("confidence must be in (0, 1)")
        if not 0 <= self.train_split < 1:
            problems.append("train_split must be in [0, 1)")
        from mipo.tasks.prefs import PREFERENCE_TYPES

        unknown = [t for t in self.preference_types if t not in PREFERENCE_TYPES]
        if unknown:
            problems.append(
                f"preference_types: unknown {', '.join(unknown)} (choose from {', '.join(PREFERENCE_TYPES)})"
            )
        return problems

    @property
    def sampling_temperature(self) -> float:
        return 0.0 if self.greedy else self.temperature


@dataclass
class EvalConfig(ScoringSettings, JudgeSettings):
    task: str = option("prefs", f"task(s), comma-separated: {task_list_help()}")
    mc_mode: str = option(
        "generate",
        "multiple choice: extract the letter of a generated reply, or rank choices by log-likelihood",
        choices=("generate", "loglik"),
    )
    context_effect: bool = option(
        True,
        "tasks whose items carry a user context (prefs, file: items with 'context'): each model also "
        "answers every item without it, to tell personalization from a generic change of style (doubles "
        "generation)",
    )
    cad_alpha: float | None = option(
        None,
        "context-aware decoding for --model (the baseline decodes plainly): (1+A) log p(.|x,c) - A log p(.|x), "
        "A >= 0; every item needs a context (mipo.sampling)",
    )

    def problems(self) -> list[str]:
        from mipo.sampling import cad_problems

        problems = super().problems() + cad_problems(self.cad_alpha, self.backend)
        if not self.task_names:
            problems.append("task: name at least one task")
        from mipo.tasks.judge import judge_task_problems

        return problems + self.judge_problems() + judge_task_problems(self)

    @property
    def task_names(self) -> list[str]:
        return split_task_list(self.task)


@dataclass
class Job:
    """What one evaluation runs: its tasks, the model in each role, and where its files go."""

    tasks: list[Task]
    roles: dict[str, str]  # "model" (and "baseline") -> model name
    reference: str | None  # pmi's reference model (None without a pmi task)
    compared: dict[str, str | None]  # task -> the model in the "baseline" role, if any
    partial: Path  # OUT/partial: generated batches, kept until results.json exists
    cache_paths: dict[str, Path] = field(default_factory=dict)  # task -> cached baseline rows


# --- steps of evaluate, in order ----------------------------------------------------------------------


def evaluate(config: EvalConfig) -> Path:
    """Evaluate ``config.model`` (and ``config.baseline``) on ``config.task``; return ``OUT/results.json``."""
    from mipo.files import atomic_write_json
    from mipo.tasks.judge import add_judgments

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
        from mipo.sampling import require_item_contexts

        require_item_contexts(job.tasks)
    start_partial(config, job)
    slot = _ModelSlot(config.device, config.backend)
    runs, from_cache = run_models(config, job, slot)
    bare_runs = run_without_context(config, job, slot)
    pmi_extra = score_pmi_tasks(config, job, runs, from_cache, slot)
    store_baseline_cache(job, runs, from_cache)
    results = build_results(config, job, runs, from_cache, pmi_extra)
    add_context_effects(config, results, job, runs, bare_runs)
    add_judgments(config, job.tasks, runs, results, slot)  # judge:SOURCE, judge-check (mipo.tasks.judge)
    atomic_write_json(results_path, results)
    clear_partial(job.partial)
    log.info("wrote %s", results_path)
    return results_path


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


def start_partial(config: EvalConfig, job: Job) -> None:
    """Resume the saved batches of the same job, or start afresh; record the job's fingerprint.

    A resume whose fingerprint differs (another model, other items, another seed...) is refused with one
    line naming what differs, unless ``--overwrite`` asks to start again.
    """
    from mipo.fingerprint import check_resume, write_fingerprint

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


def run_models(config: EvalConfig, job: Job, slot: _ModelSlot) -> tuple[Runs, set[str]]:
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


def store_baseline_cache(job: Job, runs: Runs, from_cache: set[str]) -> None:
    from mipo.files import atomic_write_json

    for task in job.tasks:
        path = job.cache_paths.get(task.name)
        if path is not None and task.name not in from_cache:
            atomic_write_json(path, {str(seed): rows for seed, rows in runs[task.name]["baseline"].items()})


# --- one model on one task --------------------------------------------------------------------------


def run_model(config: EvalConfig, job: Job, task: Task, engine, role: str) -> dict[int, Rows]:
    """Per seed, one row per item: ``{id, seed, prompt, response, extracted, verdict, score, ...}``."""
    conversations = [item.messages(config.context_mode) for item in task.items]
    if task.kind == "choice" and config.mc_mode == "loglik":
        return {config.seeds[0]: score_choices_by_loglik(config, task, conversations, *hf_model(engine))}
    batches = length_sorted_batches(engine.tokenizer, conversations, config.batch_size)
    deterministic = config.sampling_temperature == 0
    return {
        seed: run_seed(
            config,
            task,
            conversations,
            batches,
            engine,
            role,
            seed,
            partial_file(job, task, role, seed),
        )
        for seed in (config.seeds[:1] if deterministic else config.seeds)
    }


def score_choices_by_loglik(config: EvalConfig, task: Task, conversations, model, tokenizer) -> Rows:
    """Multiple choice without sampling: each choice scored as the reply, the most likely one predicted."""
    from mipo.scoring import sequence_logprobs
    from mipo.tasks.multiple_choice import loglik_prediction

    flat_conv = [c for item, c in zip(task.items, conversations) for _ in item.choices]
    flat_resp = [choice for item in task.items for choice in item.choices]
    logprobs = sequence_logprobs(
        model, tokenizer, flat_conv, flat_resp, batch_size=config.score_batch_size, progress=config.progress
    )
    rows, at = [], 0
    for item, conversation in zip(task.items, conversations):
        verdict = loglik_prediction(item, logprobs[at : at + len(item.choices)])
        at += len(item.choices)
        rows.append({"id": item.id, "seed": None, "prompt": conversation, "response": None, **verdict})
    return rows


def length_sorted_batches(tokenizer, conversations, batch_size: int) -> list[list[int]]:
    """Item indices sorted by prompt length, cut into batches that are saved as they end (``--resume``).
    Replies are seeded one by one, so the batches do not change them."""
    from mipo.generation import encode_conversations

    lengths = [len(ids) for ids in encode_conversations(tokenizer, conversations)]
    order = sorted(range(len(conversations)), key=lambda i: lengths[i])
    return [order[first : first + batch_size] for first in range(0, len(order), batch_size)]


def run_seed(config, task: Task, conversations, batches, engine, role: str, seed: int, partial: Path) -> Rows:
    """Generate and score one seed, batch by batch; with ``config.resume`` saved batches are read back."""
    from tqdm.auto import tqdm

    from mipo.files import RowWriter
    from mipo.generation import GenerationStats

    writer = RowWriter(partial, resume=config.resume, overwrite=True)
    done = {entry["index"]: entry["row"] for entry in writer.existing}
    stats = GenerationStats()
    bar = tqdm(
        total=sum(len(b) for b in batches),
        initial=sum(all(i in done for i in batch) * len(batch) for batch in batches),
        desc=f"{task.name}: {role}, seed {seed}",
        unit="item",
        disable=not config.progress,
    )
    for batch in batches:
        if all(i in done for i in batch):
            continue  # finished before an interruption
        cad_items = [task.items[i] for i in batch] if role == "model" else None  # CAD: --model only
        replies = generate(config, engine, [conversations[i] for i in batch], seed, stats, cad_items)
        for i, response in zip(batch, replies):
            done[i] = score_row(task, task.items[i], conversations[i], response, seed)
            writer.write({"index": i, "row": done[i]})
        bar.update(len(batch))
        bar.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}")
    bar.close()
    writer.abort()  # the partial rows stay until results.json is written
    return [done[i] for i in range(len(task.items))]


def generate(config, engine, conversations, seed: int, stats, cad_items=None) -> list[str]:
    """One batch of replies, one per conversation: the only place evaluation calls a generation engine."""
    from mipo.sampling import cad_arguments

    responses = engine.generate(
        conversations,
        **cad_arguments(getattr(config, "cad_alpha", None), cad_items, config.context_mode),
        temperature=config.sampling_temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=seed,
        batch_size=config.batch_size,
        progress=False,
        stats=stats,
        workers=config.workers,
    )
    return [samples[0] for samples in responses]


def score_row(task: Task, item, conversation, response: str, seed: int) -> dict[str, Any]:
    row = {"id": item.id, "seed": seed, "prompt": conversation, "response": response}
    if task.score is not None:
        row.update(task.score(item, response))
    if item.answer is not None:
        row["answer"] = item.answer
    return row


# --- PMI under the reference model ------------------------------------------------------------------


def other_prompts(config: ScoringSettings, task: Task) -> list[list[int]]:
    """The K other prompts of each item, fixed by the first seed (the same for every model compared)."""
    from mipo.pmi import choose_other_prompts

    keys = [json.dumps(item.messages(config.context_mode), sort_keys=True) for item in task.items]
    try:
        return choose_other_prompts(keys, config.k, seed=config.seeds[0])
    except ValueError as e:
        raise ConfigError(f"pmi: {e} (or raise --limit)") from None


def score_pmi(config, task: Task, runs: dict[str, dict[int, Rows]], model, tokenizer, scored=frozenset()):
    """Fill each row's ``pmi`` under the reference model (roles in ``scored`` have it already); score the
    pairs file's responses when asked."""
    pmi_of = pmi_scorer(config, task, model, tokenizer)
    for role, by_seed in runs.items():
        if role in scored:
            continue
        for seed, rows in by_seed.items():
            log.info("pmi of the %s's responses (seed %s) under the reference", role, seed)
            for row, value in zip(rows, pmi_of([r["response"] for r in rows])):
                row.update(value, score=value["pmi"], extracted=None, verdict=None)
    if not config.score_pairs:
        return {}
    return {side: [v["pmi"] for v in pmi_of(texts)] for side, texts in pairs_responses(task).items()}


def pmi_scorer(config, task: Task, model, tokenizer) -> Callable[[list[str]], list[dict[str, float]]]:
    """Responses -> one ``{pmi, logp, ...}`` per item: against K other prompts, or against the context."""
    from mipo.pmi import context_pmi_scores, pmi_scores
    from mipo.prompts import to_conversation

    conversations = [item.messages(config.context_mode) for item in task.items]
    settings = {"batch_size": config.score_batch_size, "progress": config.progress}
    if config.against == "context":
        bare = [
            to_conversation(item, context_mode=config.context_mode, with_context=False) for item in task.items
        ]
        return lambda responses: context_pmi_scores(
            model, tokenizer, conversations, bare, responses, **settings
        )
    others = other_prompts(config, task)
    return lambda responses: pmi_scores(model, tokenizer, conversations, responses, others, **settings)


def pairs_responses(task: Task) -> dict[str, list[str]]:
    """The chosen and rejected replies of a pairs file's rows (``--score-pairs``)."""
    from mipo.tasks import response_text

    texts = {
        side: [response_text(item.meta.get(side)) for item in task.items] for side in ("chosen", "rejected")
    }
    if any(t is None for side in texts.values() for t in side):
        raise ConfigError(
            "--score-pairs needs a pairs file with 'chosen' and 'rejected' on every row (--prompts/--pairs)"
        )
    return texts


# --- results ----------------------------------------------------------------------------------------


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
    from mipo.stats import mean_ci, paired_difference

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
    from mipo.files import RowWriter

    path = out / "examples" / f"{_slug(task.name)}.{role}.jsonl"
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
    from mipo.stats import histogram, mean_ci

    scores = item_scores(by_seed)
    result = mean_ci(
        scores, confidence=config.confidence, n_resamples=config.n_bootstrap, seed=config.seeds[0]
    )
    result["per_seed"] = {str(s): sum(r["score"] for r in rows) / len(rows) for s, rows in by_seed.items()}
    if task.name == "prefs":
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


# --- the context effect: the items that carry a user context, answered again without it --------------

NO_CONTEXT = "no-context"


def no_context_role(role: str) -> str:
    """``model`` -> ``model.no-context``: the name of that role's no-context partial and examples files."""
    return f"{role}.{NO_CONTEXT}"


def measures_context_effect(config: EvalConfig, task: Task) -> bool:
    """Tasks scored on free replies to items with a user context (pmi measures the context its own way)."""
    from mipo.tasks.judge import JUDGE_KINDS

    scored = task.score is not None and task.kind not in ("pmi", *JUDGE_KINDS)  # pmi: its own way; judges
    return config.context_effect and scored and any(item.context for item in task.items)


def without_context(task: Task) -> Task:
    """The task's items that carry a context, the context taken out: the same question, scored against the
    same stated preferences (a task's ``score`` reads them from the item, never from the prompt)."""
    items = [dataclasses.replace(item, context=None) for item in task.items if item.context]
    return dataclasses.replace(task, items=items)


def run_without_context(config: EvalConfig, job: Job, slot: _ModelSlot) -> Runs:
    """Each role answers each such task without the context (``mipo.context_effect``); the baseline's
    replies come from, and go to, the baseline cache. The model still loaded runs first."""
    from mipo.files import atomic_write_json

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
    from mipo.context_effect import summarize

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


# --- models, identities, files ----------------------------------------------------------------------


class _ModelSlot:
    """Holds one loaded engine at a time, so a 7B model and its baseline never share memory."""

    def __init__(self, device: str | None, backend: str = "hf"):
        self.device, self.backend, self.name, self.loaded = device, backend, None, None

    def get(self, name: str):
        if name != self.name:
            from mipo.backends import load_engine

            self.loaded = None
            gc.collect()
            log.info("loading %s", name)
            self.loaded = load_engine(self.backend, name, device=self.device)
            self.name = name
        return self.loaded


def hf_model(engine) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a transformers engine: log-prob scoring (pmi, loglik) runs the model itself."""
    if not hasattr(engine, "model"):
        raise ConfigError(
            "pmi and --mc-mode loglik score log-probabilities with the model itself: use --backend hf"
        )
    return engine.model, engine.tokenizer


def model_identity(name: str) -> dict[str, Any]:
    from mipo.models import adapter_base, resolve_model

    source = resolve_model(name)
    return {"name": name, "source": source, "adapter_base": adapter_base(source)}


def default_reference(config: ScoringSettings) -> str:
    from mipo.models import adapter_base, resolve_model

    return config.reference or config.baseline or adapter_base(resolve_model(config.model)) or config.model


def items_identity(task: Task) -> list[list[Any]]:
    """The texts, not only the ids: an edited prompts or items file is another job."""
    return [[i.id, i.prompt, i.context, i.system, i.answer, i.choices] for i in task.items]


OUTPUT_SETTINGS = ("seeds", "top_p", "max_new_tokens", "batch_size", "mc_mode", "k", "context_mode")


def job_fingerprint(config: EvalConfig, job: Job) -> dict[str, Any]:
    """Everything that changes a generated row: model weights, items, sampling settings, mipo's version."""
    from mipo.fingerprint import digest, fingerprint, weights_identity
    from mipo.models import resolve_model

    names = {**job.roles, **({"reference": job.reference} if job.reference else {})}
    return fingerprint(
        **{role: weights_identity(resolve_model(name)) for role, name in names.items()},
        items={task.name: digest(items_identity(task)) for task in job.tasks},
        temperature=config.sampling_temperature,
        **{name: getattr(config, name) for name in OUTPUT_SETTINGS},
        against=config.against,
        context_effect=config.context_effect,
        **({"cad_alpha": config.cad_alpha} if getattr(config, "cad_alpha", None) is not None else {}),
    )


def baseline_cache_path(config: EvalConfig, task: Task, name: str, reference: str | None) -> Path:
    """Where the scored rows of ``name`` on ``task`` with these settings are kept (see ``cache_baseline``)."""
    from mipo.fingerprint import digest, weights_identity
    from mipo.models import cache_dir, resolve_model

    fields = {
        "mipo_version": __version__,
        "model": weights_identity(resolve_model(name)),
        "task": task.name,
        "items": items_identity(task),
        "prompts": config.prompts,
        "temperature": config.sampling_temperature,
        **{k: getattr(config, k) for k in ("limit", "score_batch_size", "train_split", "preference_types")},
        **{k: getattr(config, k) for k in OUTPUT_SETTINGS},
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
        )
        for seed in seeds
    ]


def partial_file(job: Job, task: Task, role: str, seed: int) -> Path:
    return job.partial / f"{_slug(task.name)}.{role}.seed{seed}.jsonl"


def clear_partial(partial: Path) -> None:
    """Delete what mipo wrote in ``partial`` (listed in its manifest), then the folder if that empties it."""
    from mipo.fingerprint import read_fingerprint

    listed = (read_fingerprint(partial / MANIFEST) or {}).get("files", [])
    for name in [*listed, FINGERPRINT, MANIFEST]:
        (partial / Path(name).name).unlink(missing_ok=True)
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()


def _slug(task_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task_name.replace("file:", "file-"))[:80]


# --- the command ------------------------------------------------------------------------------------


EXPORT_FLAGS = ("profiles_per_question", "export_seed")  # --export-train's own settings


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from mipo.config import add_config_arguments
    from mipo.tasks.export import PromptExportConfig

    parser.add_argument("--config", help="a YAML file of settings (flags override it)")
    shared = tuple(f.name for f in dataclasses.fields(ScoringSettings))
    judge_flags = tuple(f.name for f in dataclasses.fields(JudgeSettings))
    add_config_arguments(parser, EvalConfig, skip=shared + judge_flags)  # --task and --mc-mode first
    add_config_arguments(parser, ScoringSettings)
    judge = parser.add_argument_group("pairwise judge (--task judge:SOURCE, judge-check; docs/judges.md)")
    add_config_arguments(judge, JudgeSettings)
    group = parser.add_argument_group(
        "writing train prompts instead (mipo.tasks.export; --task, --limit, --train-split and "
        "--preference-types apply)"
    )
    group.add_argument(
        "--export-train",
        metavar="FILE",
        help="write the task's train prompt records (JSONL, for mipo pairs) to this file and stop",
    )
    add_config_arguments(
        group,
        PromptExportConfig,
        skip=tuple(f for f in PromptExportConfig.__dataclass_fields__ if f not in EXPORT_FLAGS),
    )


def main(args: argparse.Namespace) -> int:
    from mipo.config import resolve
    from mipo.results_format import print_results

    if args.export_train:
        return run_export_train(args)
    if any(getattr(args, name) is not None for name in EXPORT_FLAGS):
        raise ConfigError("--profiles-per-question and --export-seed apply only with --export-train")
    config = resolve(EvalConfig, args, yaml_path=args.config)
    print_results(evaluate(config))
    return 0


def run_export_train(args: argparse.Namespace) -> int:
    """``mipo eval --task prefs --export-train FILE``: ``mipo.tasks.export.export_prompts`` from eval's flags."""
    from mipo.config import from_dict, load_yaml
    from mipo.tasks.export import PromptExportConfig, export_prompts, exportable_tasks

    if args.task is not None and args.task not in exportable_tasks():
        raise ConfigError(f"--export-train works with one task: {' or '.join(exportable_tasks())}")
    known = PromptExportConfig.__dataclass_fields__
    values = {k: v for k, v in (load_yaml(args.config) if args.config else {}).items() if k in known}
    values.update({k: v for k, v in vars(args).items() if k in known and k != "out" and v is not None})
    config = from_dict(PromptExportConfig, {**values, "out": args.export_train}, source="--export-train")
    path = export_prompts(config)
    print(f"wrote {sum(1 for _ in path.open(encoding='utf-8'))} train prompt records to {path}")
    return 0
