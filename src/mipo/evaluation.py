"""``mipo eval``: score a model (and a baseline, paired) on personalization, math, multiple choice and PMI.

``evaluate(EvalConfig(...))`` writes ``OUT/results.json`` (scores with bootstrap intervals, the paired
difference to the baseline with its p-value, settings and model identities) and one JSONL file of
examples per task and model under ``OUT/examples/``; it returns the path of ``results.json``.
The schema is documented in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipo import __version__
from mipo.config import option, require, to_dict
from mipo.errors import ConfigError, MipoError
from mipo.models import DEFAULT_MODEL
from mipo.results_format import print_results, results_table  # noqa: F401  # moved: re-export
from mipo.tasks import CONTEXT_MODES, Task

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    task: str = option(
        "prefs", "task(s), comma-separated: prefs, gsm8k, arc-easy, arc-challenge, mmlu, pmi, file:PATH"
    )
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
    batch_size: int = option(64, "prompts generated together")
    score_batch_size: int = option(8, "sequences scored together (pmi, --mc-mode loglik)")
    mc_mode: str = option(
        "generate",
        "multiple choice: extract the letter of a generated reply, or rank choices by log-likelihood",
        choices=("generate", "loglik"),
    )
    k: int = option(8, "pmi: other prompts whose likelihood of a response estimates its marginal")
    prompts: str | None = option(
        None,
        "pmi: held-out prompts: a prompt-records or pairs file, or a task name (prefs, gsm8k, arc-easy, "
        "arc-challenge, mmlu) for its test items (default: prefs)",
    )
    score_pairs: bool = option(False, "pmi with a pairs file: also score its chosen and rejected responses")
    train_split: float = option(0.2, "gsm8k: share of questions held apart as MIPO prompts (never evaluated)")
    context_mode: str = option(
        "system",
        "where a record's user context goes: a system message, or before the question",
        choices=CONTEXT_MODES,
    )
    export_train: str | None = option(
        None, "write the task's train prompt records (JSONL, for mipo pairs) to this file and stop"
    )
    profiles_per_question: int = option(1, "prefs --export-train: user profiles drawn per train question")
    export_seed: int = option(0, "prefs --export-train: seed of the train profiles")
    preference_types: list = option(
        [], "prefs (and pmi's default prompts, --export-train): only these preference types (default: all)"
    )
    n_bootstrap: int = option(10_000, "bootstrap resamples for the confidence intervals")
    confidence: float = option(0.95, "confidence level of the intervals")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cuda when available)")
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
        for name in (
            "max_new_tokens",
            "batch_size",
            "score_batch_size",
            "k",
            "n_bootstrap",
            "profiles_per_question",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if not 0 < self.confidence < 1:
            problems.append("confidence must be in (0, 1)")
        if not 0 <= self.train_split < 1:
            problems.append("train_split must be in [0, 1)")
        from mipo.tasks.preferences import PREFERENCE_TYPES

        unknown = [t for t in self.preference_types if t not in PREFERENCE_TYPES]
        if unknown:
            problems.append(
                f"preference_types: unknown {', '.join(unknown)} (choose from {', '.join(PREFERENCE_TYPES)})"
            )
        if not self.task_names:
            problems.append("task: name at least one task")
        require(problems)

    @property
    def task_names(self) -> list[str]:
        # "file:" paths may hold commas only if quoted by the user; split on commas before a task name.
        return [
            t.strip()
            for t in re.split(r",(?=\s*(?:prefs|gsm8k|arc-|mmlu|pmi|file:))", self.task)
            if t.strip()
        ]

    @property
    def sampling_temperature(self) -> float:
        return 0.0 if self.greedy else self.temperature


def export_train(config: EvalConfig) -> Path:
    """Write the train prompt records of ``config.task`` (prefs or gsm8k) to ``config.export_train``."""
    from mipo.files import atomic_write_text
    from mipo.tasks import math, prefs

    names = config.task_names
    if names == ["prefs"]:
        return prefs.export_train_prompts(
            config.export_train,
            n_questions=config.limit,
            profiles_per_question=config.profiles_per_question,
            seed=config.export_seed,
            train_split=config.train_split,
            types=config.preference_types or None,
        )
    if names == ["gsm8k"]:
        records = math.train_records(train_split=config.train_split, limit=config.limit)
        return atomic_write_text(
            config.export_train, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        )
    raise ConfigError("--export-train works with one task: prefs or gsm8k")


class _ModelSlot:
    """Holds one loaded model at a time, so a 7B model and its baseline never share memory."""

    def __init__(self, device: str | None):
        self.device, self.name, self.loaded = device, None, None

    def get(self, name: str):
        if name != self.name:
            from mipo.models import load_model

            self.loaded = None
            gc.collect()
            log.info("loading %s", name)
            self.loaded = load_model(name, device=self.device)
            self.name = name
        return self.loaded


def model_identity(name: str) -> dict[str, Any]:
    from mipo.models import _adapter_base, resolve_model

    source = resolve_model(name)
    return {"name": name, "source": source, "adapter_base": _adapter_base(source)}


def default_reference(config: EvalConfig) -> str:
    from mipo.models import _adapter_base, resolve_model

    return config.reference or config.baseline or _adapter_base(resolve_model(config.model)) or config.model


def _slug(task_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task_name.replace("file:", "file-"))[:80]


def _run_model(
    config: EvalConfig, task: Task, model, tokenizer, role: str
) -> dict[int, list[dict[str, Any]]]:
    """Per seed, one row per item: ``{id, seed, prompt, response, extracted, verdict, score, ...}``.

    Generated rows are saved batch by batch under ``OUT/partial/``; with ``config.resume`` the saved
    batches are read back instead of generated again.
    """
    from mipo.generation import generate_responses
    from mipo.pmi import sequence_logprobs
    from mipo.tasks.multiple_choice import loglik_prediction

    conversations = [item.messages(config.context_mode) for item in task.items]
    if task.kind == "choice" and config.mc_mode == "loglik":
        flat_conv = [c for item, c in zip(task.items, conversations) for _ in item.choices]
        flat_resp = [choice for item in task.items for choice in item.choices]
        logprobs = sequence_logprobs(
            model,
            tokenizer,
            flat_conv,
            flat_resp,
            batch_size=config.score_batch_size,
            progress=config.progress,
        )
        rows, at = [], 0
        for item, conversation in zip(task.items, conversations):
            verdict = loglik_prediction(item, logprobs[at : at + len(item.choices)])
            at += len(item.choices)
            rows.append({"id": item.id, "seed": None, "prompt": conversation, "response": None, **verdict})
        return {config.seeds[0]: rows}
    from tqdm.auto import tqdm

    from mipo.files import RowWriter
    from mipo.generation import GenerationStats, encode_conversations

    # Items sorted by prompt length and fed one batch at a time: the same batches (and, with
    # ``first_batch``, the same random streams) as one call, and each batch's rows are saved as it ends.
    lengths = [len(ids) for ids in encode_conversations(tokenizer, conversations)]
    order = sorted(range(len(task.items)), key=lambda i: lengths[i])
    batches = [order[first : first + config.batch_size] for first in range(0, len(order), config.batch_size)]
    deterministic = config.sampling_temperature == 0
    by_seed = {}
    for seed in config.seeds[:1] if deterministic else config.seeds:
        partial = Path(config.out) / "partial" / f"{_slug(task.name)}.{role}.seed{seed}.jsonl"
        writer = RowWriter(partial, resume=config.resume, overwrite=True)
        done = {entry["index"]: entry["row"] for entry in writer.existing}
        stats = GenerationStats()
        bar = tqdm(
            total=len(order),
            initial=sum(all(i in done for i in batch) * len(batch) for batch in batches),
            desc=f"{task.name}: {role}, seed {seed}",
            unit="item",
            disable=not config.progress,
        )
        for b, batch in enumerate(batches):
            if all(i in done for i in batch):
                continue  # finished before an interruption
            responses = generate_responses(
                model,
                tokenizer,
                [conversations[i] for i in batch],
                temperature=config.sampling_temperature,
                top_p=config.top_p,
                max_new_tokens=config.max_new_tokens,
                seed=seed,
                batch_size=config.batch_size,
                progress=False,
                stats=stats,
                first_batch=b,
            )
            for i, (response,) in zip(batch, responses):
                item = task.items[i]
                row = {"id": item.id, "seed": seed, "prompt": conversations[i], "response": response}
                if task.score is not None:
                    row.update(task.score(item, response))
                if item.answer is not None:
                    row["answer"] = item.answer
                writer.write({"index": i, "row": row})
                done[i] = row
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}")
        bar.close()
        writer.abort()  # the partial rows stay until results.json is written
        by_seed[seed] = [done[i] for i in range(len(task.items))]
    return by_seed


def _baseline_cache_path(config: EvalConfig, task: Task, name: str, reference: str | None) -> Path:
    """Where the scored rows of ``name`` on ``task`` with these settings are kept (see ``cache_baseline``)."""
    from mipo.models import cache_dir, resolve_model
    from mipo.ref_cache import cache_key, reference_identity

    fields = {
        "mipo_version": __version__,
        "model": reference_identity(resolve_model(name)),
        "task": task.name,
        "items": [  # the texts, not only the ids: an edited prompts or items file misses the cache
            [
                item.id,
                item.prompt,
                item.context,
                item.system,
                item.answer,
                item.choices,
                item.messages_override,
            ]
            for item in task.items
        ],
        "prompts": config.prompts,
        **{
            k: getattr(config, k)
            for k in (
                "limit",
                "seeds",
                "top_p",
                "max_new_tokens",
                "batch_size",
                "score_batch_size",
                "mc_mode",
                "train_split",
                "context_mode",
                "preference_types",
            )
        },
        "temperature": config.sampling_temperature,
    }
    if task.kind == "pmi":
        fields.update(k=config.k, reference=reference_identity(resolve_model(reference)))
    return cache_dir() / "eval" / f"{cache_key(fields)}.json"


def _other_prompts(config: EvalConfig, task: Task) -> list[list[int]]:
    """The K other prompts of each item, fixed by the first seed (the same for every model compared)."""
    from mipo.pmi import choose_other_prompts

    keys = [json.dumps(item.messages(config.context_mode), sort_keys=True) for item in task.items]
    try:
        return choose_other_prompts(keys, config.k, seed=config.seeds[0])
    except ValueError as e:
        raise ConfigError(f"pmi: {e} (or raise --limit)") from None


def _score_pmi(
    config: EvalConfig,
    task: Task,
    runs: dict[str, dict[int, list[dict]]],
    model,
    tokenizer,
    scored: set[str] = frozenset(),
) -> dict[str, Any]:
    """Fill each row's ``pmi`` under the reference model (roles in ``scored`` have it already); score the
    pairs file's responses when asked."""
    from mipo.pmi import pmi_scores
    from mipo.tasks import response_text

    conversations = [item.messages(config.context_mode) for item in task.items]
    others = _other_prompts(config, task)
    for role, by_seed in runs.items():
        if role in scored:
            continue
        for seed, rows in by_seed.items():
            log.info("pmi of the %s's responses (seed %s) under the reference", role, seed)
            values = pmi_scores(
                model,
                tokenizer,
                conversations,
                [r["response"] for r in rows],
                others,
                batch_size=config.score_batch_size,
                progress=config.progress,
            )
            for row, value in zip(rows, values):
                row.update(value, score=value["pmi"], extracted=None, verdict=None)
    extra: dict[str, Any] = {}
    if config.score_pairs:
        texts = {
            side: [response_text(item.meta.get(side)) for item in task.items]
            for side in ("chosen", "rejected")
        }
        if any(t is None for side in texts.values() for t in side):
            raise ConfigError(
                "--score-pairs needs a pairs file with 'chosen' and 'rejected' on every row (--prompts/--pairs)"
            )
        extra = {
            side: [
                v["pmi"]
                for v in pmi_scores(
                    model,
                    tokenizer,
                    conversations,
                    resp,
                    others,
                    batch_size=config.score_batch_size,
                    progress=config.progress,
                )
            ]
            for side, resp in texts.items()
        }
    return extra


def _item_scores(by_seed: dict[int, list[dict]]) -> list[float]:
    """Each item's score averaged over seeds (items are the unit of the statistics)."""
    seeds = list(by_seed)
    return [sum(by_seed[s][i]["score"] for s in seeds) / len(seeds) for i in range(len(by_seed[seeds[0]]))]


def _summary(config: EvalConfig, task: Task, by_seed: dict[int, list[dict]]) -> dict[str, Any]:
    from mipo.stats import histogram, mean_ci

    scores = _item_scores(by_seed)
    summary = mean_ci(
        scores, confidence=config.confidence, n_resamples=config.n_bootstrap, seed=config.seeds[0]
    )
    summary["per_seed"] = {str(s): sum(r["score"] for r in rows) / len(rows) for s, rows in by_seed.items()}
    if task.name == "prefs":
        per_type: dict[str, list[bool]] = defaultdict(list)
        for rows in by_seed.values():
            for row in rows:
                for verdict in row["preferences"]:
                    per_type[verdict["type"]].append(verdict["followed"])
        summary["per_preference"] = {
            t: {"mean": sum(v) / len(v), "n": len(v)} for t, v in sorted(per_type.items())
        }
    if task.kind == "pmi":
        summary["values"] = scores
        summary["histogram"] = histogram(scores)
    return summary


def evaluate(config: EvalConfig) -> Path:
    """Evaluate ``config.model`` (and ``config.baseline``) on ``config.task``; return ``OUT/results.json``.

    With ``config.export_train`` set, write the task's train prompts instead and return that file.
    """
    from mipo.files import RowWriter, atomic_write_json
    from mipo.stats import mean_ci, paired_difference
    from mipo.tasks import load_task

    if config.export_train:
        return export_train(config)
    out = Path(config.out)
    results_path = out / "results.json"
    if results_path.exists() and not config.overwrite:
        raise MipoError(
            f"{results_path} already exists; pass --overwrite to replace it or choose another --out"
        )
    partial = out / "partial"
    if partial.is_dir() and any(partial.iterdir()) and not (config.resume or config.overwrite):
        raise MipoError(
            f"{partial} holds an interrupted evaluation; pass --resume to continue it or --overwrite to "
            "start again"
        )
    tasks = [
        load_task(
            n,
            limit=config.limit,
            train_split=config.train_split,
            prompts=config.prompts,
            preference_types=config.preference_types or None,
        )
        for n in config.task_names
    ]
    for task in tasks:
        if task.kind == "pmi":  # fail before any model loads when the prompts cannot supply K others
            _other_prompts(config, task)
    roles = {"model": config.model, **({"baseline": config.baseline} if config.baseline else {})}
    pmi_reference = default_reference(config) if any(t.kind == "pmi" for t in tasks) else None
    # the other model's role per task: the baseline, or (pmi without a baseline) the reference's own responses
    compared = {
        t.name: roles.get("baseline")
        or (pmi_reference if t.kind == "pmi" and pmi_reference != config.model else None)
        for t in tasks
    }
    cache_paths = {
        t.name: _baseline_cache_path(config, t, compared[t.name], pmi_reference)
        for t in tasks
        if config.cache_baseline and compared[t.name]
    }
    slot = _ModelSlot(config.device)
    runs: dict[str, dict[str, dict[int, list[dict]]]] = defaultdict(dict)  # task -> role -> seed -> rows
    from_cache: set[str] = set()  # tasks whose baseline rows (scored) came from the cache
    for task in tasks:
        path = cache_paths.get(task.name)
        if path is not None and path.is_file():
            cached = json.loads(path.read_text())
            runs[task.name]["baseline"] = {int(seed): rows for seed, rows in cached.items()}
            from_cache.add(task.name)
            log.info("%s: the baseline's scored outputs come from the cache (%s)", task.name, path)
    for role, name in roles.items():
        for task in tasks:
            if role in runs[task.name]:
                continue
            model, tokenizer = slot.get(name)
            log.info("%s: %s on %d items", task.name, role, len(task.items))
            runs[task.name][role] = _run_model(config, task, model, tokenizer, role)
    pmi_extra: dict[str, Any] = {}
    reference = None
    for task in tasks:
        if task.kind != "pmi":
            continue
        reference = pmi_reference
        if "baseline" not in runs[task.name] and compared[task.name]:
            log.info("pmi: the reference model's own responses, for comparison")
            runs[task.name]["baseline"] = _run_model(config, task, *slot.get(reference), "baseline")
        pmi_extra = _score_pmi(
            config,
            task,
            runs[task.name],
            *slot.get(reference),
            scored={"baseline"} if task.name in from_cache else set(),
        )
    for task in tasks:
        path = cache_paths.get(task.name)
        if path is not None and task.name not in from_cache:
            atomic_write_json(path, {str(seed): rows for seed, rows in runs[task.name]["baseline"].items()})

    results: dict[str, Any] = {
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
            "reference": model_identity(reference) if reference else None,
        },
        "tasks": {},
    }
    for task in tasks:
        entry: dict[str, Any] = {
            "n": len(task.items),
            "metric": task.metric,
            "source": task.source,
            "kind": task.kind,
        }
        entry["models"] = {
            "model": config.model,
            "baseline": None,
            "reference": reference if task.kind == "pmi" else None,
        }
        if task.kind == "choice":
            entry["mc_mode"] = config.mc_mode
        entry["examples"] = {}
        for role, by_seed in runs[task.name].items():
            entry["models"][role] = roles.get(role, reference)
            entry[role] = _summary(config, task, by_seed)
            path = out / "examples" / f"{_slug(task.name)}.{role}.jsonl"
            with RowWriter(path, overwrite=True) as writer:
                for rows in by_seed.values():
                    for row in rows:
                        writer.write(row)
            entry["examples"][role] = str(path.relative_to(out))
        if "baseline" in runs[task.name]:
            entry["difference"] = paired_difference(
                _item_scores(runs[task.name]["model"]),
                _item_scores(runs[task.name]["baseline"]),
                confidence=config.confidence,
                n_resamples=config.n_bootstrap,
                seed=config.seeds[0],
            )
        if task.kind == "pmi" and pmi_extra:
            stats = {
                "confidence": config.confidence,
                "n_resamples": config.n_bootstrap,
                "seed": config.seeds[0],
            }
            entry["pairs"] = {
                "chosen": mean_ci(pmi_extra["chosen"], **stats),
                "rejected": mean_ci(pmi_extra["rejected"], **stats),
                "difference": paired_difference(pmi_extra["chosen"], pmi_extra["rejected"], **stats),
            }
        results["tasks"][task.name] = entry
    atomic_write_json(results_path, results)
    shutil.rmtree(out / "partial", ignore_errors=True)
    log.info("wrote %s", results_path)
    return results_path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from mipo.config import add_config_arguments

    parser.add_argument("--config", help="a YAML file of settings (flags override it)")
    add_config_arguments(parser, EvalConfig)


def main(args: argparse.Namespace) -> int:
    from mipo.config import resolve

    config = resolve(EvalConfig, args, yaml_path=args.config)
    path = evaluate(config)
    if config.export_train:
        print(f"wrote {sum(1 for _ in path.open(encoding='utf-8'))} train prompt records to {path}")
        return 0
    print_results(path)
    return 0
