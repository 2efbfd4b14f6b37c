"""The judge stages: the model against a baseline (``judge_pairwise``) and the judge against the ``prefs``
checkers (``judge_check``), each pair judged in both orders and cached."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mipo.core.errors import MipoError
from mipo.evaluation.judges.base import Judge, JudgeRequest
from mipo.evaluation.judges.cache import VerdictCache, judge_cached
from mipo.evaluation.judges.summary import summarize_outcomes, words
from mipo.evaluation.judges.template import Template, load_template
from mipo.evaluation.judges.verdicts import LOSS, TIE, UNPARSEABLE, WIN, combine_orders
from mipo.formats.results import format_ci

CHANCE = 0.5  # agreement of a judge that guesses


def _field(item: Any, name: str) -> Any:
    """An item's field, for ``mipo.tasks.Item`` records and plain dicts alike."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _question(item: Any) -> str:
    """The user's question: the prompt, or the last user turn of a prompt given as chat messages."""
    prompt = _field(item, "prompt")
    if isinstance(prompt, list):
        return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    return prompt


def open_cache(cache: bool | str | Path | None, judge: Judge, template: Template) -> VerdictCache | None:
    """``True``: the default folder ``$MIPO_CACHE/judge``; a path: that folder; ``False``/``None``: no cache."""
    if cache is None or cache is False:
        return None
    if cache is True:
        from mipo.engine.models import cache_dir

        cache = cache_dir() / "judge"
    return VerdictCache(cache, judge, template)


def judge_pairwise(
    items: Sequence[Any],
    model_replies: Sequence[str],
    baseline_replies: Sequence[str],
    judge: Judge,
    template: str | Path | Template = "personalization",
    *,
    cache: bool | str | Path | None = True,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(summary, rows)``: the model's reply against the baseline's for each item, judged in both orders.

    ``items`` are ``mipo.tasks.Item`` records or dicts with ``prompt``, ``context`` (may be None) and ``id``.
    A row per item: the verdict in each order, the combined outcome for the model (win/loss/tie/unparseable),
    whether the orders contradicted each other, the raw judge output and both replies' lengths in words.
    The summary: see ``mipo.evaluation.judges.summary.summarize_outcomes``, plus the judge, the template, and how many
    verdicts were asked of the judge (``judge_calls``; the rest came from the cache).
    """
    if not len(items) == len(model_replies) == len(baseline_replies):
        raise MipoError(
            f"judge: {len(items)} items, {len(model_replies)} model replies and "
            f"{len(baseline_replies)} baseline replies; each item needs one of each"
        )
    template = load_template(template)
    requests = []
    for item, model_reply, baseline_reply in zip(items, model_replies, baseline_replies):
        question, context = _question(item), _field(item, "context")
        requests.append(JudgeRequest(question, context, model_reply, baseline_reply))  # model shown as A
        requests.append(JudgeRequest(question, context, baseline_reply, model_reply))  # model shown as B
    judgments, asked = judge_cached(judge, template, requests, open_cache(cache, judge, template))
    rows = []
    for i, (item, model_reply, baseline_reply) in enumerate(zip(items, model_replies, baseline_replies)):
        as_a, as_b = judgments[2 * i], judgments[2 * i + 1]
        outcome, inconsistent = combine_orders(as_a.verdict, as_b.verdict)
        rows.append(
            {
                "id": _field(item, "id"),
                "outcome": outcome,
                "inconsistent": inconsistent,
                "verdict_model_as_a": as_a.verdict,
                "verdict_model_as_b": as_b.verdict,
                "raw_model_as_a": as_a.raw,
                "raw_model_as_b": as_b.raw,
                "probs_model_as_a": as_a.probs,
                "probs_model_as_b": as_b.probs,
                "words_model": words(model_reply),
                "words_baseline": words(baseline_reply),
            }
        )
    summary = summarize_outcomes(rows, seed=seed)
    summary.update(
        judge=judge.name,
        template=template.name,
        unparseable_verdicts=sum(j.verdict is None for j in judgments),
        verdicts=len(judgments),
        judge_calls=asked,
    )
    return summary, rows


def checker_pairs(
    items: Sequence[Any], replies_a: Sequence[str], replies_b: Sequence[str]
) -> list[tuple[Any, str, str, tuple[float, float]]]:
    """``(item, reply_a, reply_b, (score_a, score_b))`` for ``prefs`` items: each score is the share of the
    item's stated preferences (``meta["preferences"]``) the reply follows, by the code checkers."""
    from mipo.tasks.prefs.checkers import follows

    out = []
    for item, reply_a, reply_b in zip(items, replies_a, replies_b):
        preferences = (_field(item, "meta") or {}).get("preferences")
        if not preferences:
            raise MipoError(f"judge-check: item {_field(item, 'id')!r} states no preferences to check")
        scores = tuple(sum(follows(p, r) for p in preferences) / len(preferences) for r in (reply_a, reply_b))
        out.append((item, reply_a, reply_b, scores))
    return out


def judge_check(
    examples: Sequence[tuple[Any, str, str, Sequence[float]]],
    judge: Judge,
    template: str | Path | Template = "personalization",
    *,
    cache: bool | str | Path | None = True,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """How far to trust the judge: its agreement with the code checkers on pairs they tell apart.

    ``examples`` are ``(item, reply_a, reply_b, (checker_score_a, checker_score_b))``; pairs whose scores are
    equal are skipped. Each kept pair is judged in both orders like ``judge_pairwise``, with the reply the
    checkers prefer in the model's place: agreement = (agreements + ties/2) / pairs, 0.5 for a judge that
    guesses, with a bootstrap CI and a sign test against chance.
    """
    kept = [(item, a, b, tuple(s)) for item, a, b, s in examples if s[0] != s[1]]
    preferred = [a if s[0] > s[1] else b for _, a, b, s in kept]
    other = [b if s[0] > s[1] else a for _, a, b, s in kept]
    pairwise, rows = judge_pairwise(
        [k[0] for k in kept], preferred, other, judge, template, cache=cache, seed=seed
    )
    for row, (_, _, _, scores) in zip(rows, kept):
        row["checker_scores"] = {"preferred": max(scores), "other": min(scores)}
        row["judge_agrees"] = {WIN: "yes", LOSS: "no", TIE: "tie", UNPARSEABLE: "unparseable"}[row["outcome"]]
    summary = {
        "judge": judge.name,
        "template": pairwise["template"],
        "pairs_given": len(examples),
        "pairs": len(kept),
        "agree": pairwise["wins"],
        "disagree": pairwise["losses"],
        "ties": pairwise["ties"],
        "inconsistent": pairwise["inconsistent"],
        "unparseable": pairwise["unparseable"],
        "n": pairwise["n"],
        "agreement": pairwise["win_rate"],
        "sign_test_p": pairwise["sign_test_p"],
        "chance": CHANCE,
        "judge_calls": pairwise["judge_calls"],
    }
    summary["note"] = trust_note(summary["agreement"]) + builtin_judge_note(judge)
    return summary, rows


def builtin_judge_note(judge: Judge) -> str:
    """Said plainly beside every check of a built-in model (135M-270M parameters) used as the judge."""
    from mipo.engine.models import BUILTIN_MODELS

    if judge.name not in BUILTIN_MODELS:
        return ""
    return (
        f". The built-in {judge.name} is far too small to judge personalization (expect chance): it serves "
        "for the plumbing only; serve a larger judge (docs/judges.md)"
    )


def trust_note(agreement: dict[str, Any] | None) -> str:
    """One plain sentence on what the agreement with the checkers says about the judge."""
    if agreement is None:
        return "no pair where the checkers tell the replies apart was judged: the judge is unchecked"
    low, high = agreement["ci"]
    told = f"agreement with the checkers {format_ci(agreement)} over {agreement['n']} pairs"
    if low > CHANCE:
        return f"{told}: better than chance"
    if high < CHANCE:
        return f"{told}: worse than chance (it prefers the reply that ignores the user's preferences)"
    return (
        f"{told} includes chance ({CHANCE}): this judge does not tell a reply that follows the user's "
        "preferences from one that ignores them; do not trust its win rates"
    )
