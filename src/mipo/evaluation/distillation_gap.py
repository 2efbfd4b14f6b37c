"""How much of context-aware decoding did training absorb? The distillation gap, measured without generating.

Along the baseline's reply *with* the user's context to each held-out item (already generated: reused),
three forward passes give, at every reply token t, the baseline's next-token log-probs with the context
``log p(·|x,c,y<t)``, without it ``log p(·|x,y<t)``, and the model's with the context. The teacher is CAD of
the baseline, ``softmax((1 + A) log p(·|x,c,y<t) − A log p(·|x,y<t))`` (``mipo.engine.cad``, the same
definition decoding uses; plain CAD, whatever ``--cad-lift-once`` or ``--cad-plausibility`` say: the gap is
always to the same target); per item:

- ``kl``: the mean per-token KL(teacher ‖ model), for the model and for the baseline itself (the starting gap);
- ``decisions``: at the positions where the teacher's top token differs from the baseline's (CAD's decision
  points), the share where the model's top token is the teacher's: 0 for the baseline by construction, 1 for
  CAD itself;
- the gap closed, 1 − kl(model) / kl(baseline), over items.

A model trained toward CAD (``mipo train --objective guidance``) should close it; a model that gained on
adherence by another route (a change of style) can end further from CAD than the baseline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipo.core.errors import MipoError
from mipo.evaluation.settings import EvalConfig, Job, Runs, scored_with_contexts
from mipo.tasks import Task

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 1.0  # the teacher's A when the evaluation decodes without CAD
GAP_ROLE = "distillation-gap"  # examples/TASK.distillation-gap.jsonl: one line per item


def gap_scores(
    with_context: torch.Tensor, without: torch.Tensor, model: torch.Tensor, alpha: float
) -> dict[str, float | int]:
    """One reply's distillation gap from three ``(T, V)`` next-token log-prob tensors along it: the baseline
    with the context, without it, and the model with it. ``{kl, decision_points, decisions_taken, tokens}``:
    the mean per-token KL(teacher ‖ model) in nats, the positions where the teacher's top token is not the
    baseline's, and how many of them the model's top token is the teacher's."""
    from mipo.engine.cad import cad_log_probs, token_kl

    teacher = cad_log_probs(with_context, without, alpha)  # (T, V)
    per_token = token_kl(teacher, model)  # (T,)
    teacher_top = teacher.argmax(-1)  # (T,)
    points = teacher_top != with_context.argmax(-1)  # (T,): CAD's decision points
    taken = model.argmax(-1)[points] == teacher_top[points]
    return {
        "kl": float(per_token.mean()),
        "decision_points": int(points.sum()),
        "decisions_taken": int(taken.sum()),
        "tokens": int(teacher.shape[0]),
    }


def gap_plan(config: EvalConfig, job: Job) -> tuple[list[Task], str | None]:
    """The tasks whose gap is to be measured, and, when on by default, why it cannot be (then none is);
    refused before any model loads when asked for explicitly (``--distillation-gap``) where it cannot be."""
    if config.distillation_gap is False:
        return [], None
    loglik = config.mc_mode == "loglik"  # multiple choice ranked by log-likelihood: no reply to score along
    tasks = [t for t in job.tasks if scored_with_contexts(t) and not (t.kind == "choice" and loglik)]
    explicit = config.distillation_gap is True
    if not tasks:
        if explicit:
            names = ", ".join(task.name for task in job.tasks)
            raise MipoError(
                f"--distillation-gap: no item of task {names} has a user context (the teacher contrasts the "
                "prompt with and without it)"
            )
        return [], None
    reason = None
    if "baseline" not in job.roles:
        reason = "no --baseline (the teacher is context-aware decoding of the baseline)"
    elif config.backend != "hf":
        reason = f"backend {config.backend!r} (log-prob scoring needs --backend hf)"
    elif differing := tokenizers_differ(job.roles["model"], job.roles["baseline"]):
        if explicit:
            raise MipoError(differing)
        reason = differing
    return tasks, reason


def tokenizers_differ(model: str, baseline: str) -> str | None:
    """One line naming both models when their vocabularies differ (the gap compares distributions over one)."""
    from mipo.engine.models import load_tokenizer, resolve_model

    if resolve_model(model) == resolve_model(baseline):
        return None
    if load_tokenizer(model).get_vocab() == load_tokenizer(baseline).get_vocab():
        return None
    return (
        f"--distillation-gap: --model {model} and --baseline {baseline} have different tokenizers; the gap "
        "compares next-token distributions over one vocabulary (pass --no-distillation-gap)"
    )


def what_it_compares(model: str, baseline: str, alpha: float) -> str:
    """One line: an adapter against its base (what training absorbed), or two unrelated models."""
    from mipo.engine.models import adapter_base, resolve_model

    base = adapter_base(resolve_model(model))
    teacher = f"context-aware decoding (A = {alpha:g}) of {baseline}"
    if base is not None and resolve_model(base) == resolve_model(baseline):
        return f"{model}, an adapter of {baseline}, against {teacher}: how much of the decoding training absorbed"
    return (
        f"{model} is not an adapter of {baseline}: the gap compares its next-token distributions with "
        f"{teacher}; it says how much of the decoding training absorbed only if {model} was trained from "
        f"{baseline}"
    )


def gap_alpha(config: EvalConfig) -> float:
    """The teacher's A: ``--gap-alpha``, else the A the model decodes with (``--cad-alpha``), else 1."""
    for alpha in (config.gap_alpha, config.cad_alpha):
        if alpha is not None:
            return alpha
    return DEFAULT_ALPHA


def measure_distillation_gaps(config: EvalConfig, job: Job, runs: Runs, slot, tasks: list[Task]) -> dict:
    """``{task name: distillation_gap entry}``; writes ``examples/TASK.distillation-gap.jsonl``. The model
    in the slot stays; the other is loaded beside it for the three forward passes."""
    if not tasks:
        return {}
    from mipo.engine.backends import load_engine

    names = {role: job.roles[role] for role in ("model", "baseline")}
    engines = {
        role: slot.loaded if slot.name == name else load_engine(config.backend, name, device=config.device)
        for role, name in names.items()
    }
    alpha = gap_alpha(config)
    entries = {}
    for task in tasks:
        log.info("%s: the distillation gap to CAD (A = %g) of the baseline", task.name, alpha)
        per_item = item_gaps(config, task, runs[task.name]["baseline"], engines, alpha)
        entries[task.name] = summarize_gap(config, task, per_item, alpha)
        entries[task.name]["compares"] = what_it_compares(names["model"], names["baseline"], alpha)
    return entries


def item_gaps(config: EvalConfig, task: Task, baseline_rows, engines, alpha: float) -> list[dict[str, Any]]:
    """Per item with a context: the baseline's and the model's gap along the baseline's reply (first seed)."""
    from mipo.engine.scoring import encode_response, reply_token_logprobs
    from mipo.prompts.records import to_conversation

    seed = config.seeds[0]  # greedy decoding runs the first seed only
    tokenizer = engines["baseline"].tokenizer
    kept = [i for i, item in enumerate(task.items) if item.context]
    length = {  # chunks of similar length pad little (a third fewer tokens than in the items' order)
        i: sum(map(len, encode_response(tokenizer, task.items[i].messages(config.context_mode), reply)))
        for i, reply in ((i, baseline_rows[seed][i]["response"]) for i in kept)
    }
    kept.sort(key=length.__getitem__)
    replies = [baseline_rows[seed][i]["response"] for i in kept]
    with_context = [task.items[i].messages(config.context_mode) for i in kept]
    bare = [
        to_conversation(task.items[i], context_mode=config.context_mode, with_context=False) for i in kept
    ]
    size = config.score_batch_size
    rows = []
    for first in range(0, len(kept), size):
        chunk = slice(first, first + size)

        def logprobs(role, conversations, chunk=chunk):
            engine = engines[role]
            return reply_token_logprobs(
                engine.model, engine.tokenizer, conversations[chunk], replies[chunk], batch_size=size
            )

        base_with, base_without = logprobs("baseline", with_context), logprobs("baseline", bare)
        model_with = logprobs("model", with_context)
        for i, b_with, b_without, m_with in zip(kept[chunk], base_with, base_without, model_with):
            if m_with.shape != b_with.shape:
                raise MipoError(
                    f"{task.name}, item {task.items[i].id}: the model reads the baseline's reply as "
                    f"{m_with.shape[0]} tokens of {m_with.shape[1]}, the baseline as {b_with.shape[0]} of "
                    f"{b_with.shape[1]}: the distillation gap needs one tokenizer (--no-distillation-gap)"
                )
            base = gap_scores(b_with, b_without, b_with, alpha)
            model = gap_scores(b_with, b_without, m_with, alpha)
            rows.append(
                {
                    "index": i,
                    "id": task.items[i].id,
                    "seed": seed,
                    "tokens": base["tokens"],
                    "decision_points": base["decision_points"],
                    "kl_baseline": base["kl"],
                    "kl_model": model["kl"],
                    "decisions_baseline": base["decisions_taken"],
                    "decisions_model": model["decisions_taken"],
                }
            )
    return [{k: v for k, v in row.items() if k != "index"} for row in sorted(rows, key=lambda r: r["index"])]


def summarize_gap(config: EvalConfig, task: Task, rows: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """The ``distillation_gap`` entry of a task in ``results.json``: per-item means with bootstrap intervals."""
    from mipo.core.stats import mean_ci, paired_difference, ratio_of_means
    from mipo.evaluation.summaries import write_examples

    stats = {"confidence": config.confidence, "n_resamples": config.n_bootstrap, "seed": config.seeds[0]}
    kl = {role: [row[f"kl_{role}"] for row in rows] for role in ("model", "baseline")}
    with_points = [row for row in rows if row["decision_points"]]
    decisions = {
        role: mean_ci([row[f"decisions_{role}"] / row["decision_points"] for row in with_points], **stats)
        if with_points
        else None
        for role in ("model", "baseline")
    }
    ratio = ratio_of_means(kl["model"], kl["baseline"], **stats)
    closed = None
    if ratio is not None:
        low, high = ratio["ci"]
        closed = {"mean": 1 - ratio["mean"], "ci": [1 - high, 1 - low], "n": ratio["n"]}
    tokens = sum(row["tokens"] for row in rows)
    points = sum(row["decision_points"] for row in rows)
    return {
        "alpha": alpha,
        "along": f"the baseline's replies with the context (seed {rows[0]['seed']}, temperature "
        f"{config.sampling_temperature:g})",
        "n": len(rows),
        "kl": {
            "model": mean_ci(kl["model"], **stats),
            "baseline": mean_ci(kl["baseline"], **stats),
            "difference": paired_difference(kl["model"], kl["baseline"], **stats),
        },
        "gap_closed": closed,
        "decisions": {**decisions, "n": len(with_points)},
        "decision_points": {"count": points, "tokens": tokens, "share": points / tokens if tokens else 0.0},
        "examples": write_examples(Path(config.out), task, GAP_ROLE, {rows[0]["seed"]: rows}),
    }
