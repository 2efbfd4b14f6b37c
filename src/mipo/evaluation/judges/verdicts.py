"""Reading a verdict: from the judge's text, from verdict-token log-probabilities, and from both orders.

FastChat's MT-Bench pairwise method: the judge answers ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie); each pair
is judged twice, the two replies swapped the second time, and a reply wins only when both orders agree;
orders that disagree are a tie (a judge that always picks the first reply gives ties, not wins).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from mipo.evaluation.judges.base import VERDICTS, Judgment

_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")

WIN, LOSS, TIE, UNPARSEABLE = "win", "loss", "tie", "unparseable"
OUTCOME_SCORES = {WIN: 1.0, TIE: 0.5, LOSS: 0.0}


def parse_verdict(text: str) -> str | None:
    """The last ``[[A]]``/``[[B]]``/``[[C]]`` in ``text`` (the final verdict comes last when a judge echoes
    the format first), or None when there is none."""
    found = _VERDICT.findall(text or "")
    return found[-1] if found else None


def verdict_from_logprobs(logprobs: Mapping[str, float], raw_prefix: str = "") -> Judgment:
    """The judgment read from the log-probabilities of the verdict letters (missing letters: probability 0).

    The verdict is the most probable letter; ``probs`` are normalized over A/B/C and ``mass`` is their
    total probability before normalizing.
    """
    present = {v: logprobs[v] for v in VERDICTS if v in logprobs and math.isfinite(logprobs[v])}
    if not present:
        return Judgment(None, raw_prefix + "no verdict letter among the returned log-probabilities")
    top = max(present.values())
    weights = {v: math.exp(present[v] - top) if v in present else 0.0 for v in VERDICTS}
    total = sum(weights.values())
    probs = {v: weights[v] / total for v in VERDICTS}
    mass = total * math.exp(top)
    verdict = max(VERDICTS, key=lambda v: probs[v])
    raw = (
        raw_prefix
        + " ".join(f"p({v})={probs[v]:.3f}" for v in VERDICTS)
        + f" (verdict-token mass {mass:.3g})"
    )
    return Judgment(verdict, raw, probs, mass)


def outcome_first(verdict: str | None) -> str:
    """The outcome for the reply shown as A."""
    return {"A": WIN, "B": LOSS, "C": TIE}.get(verdict, UNPARSEABLE)  # type: ignore[arg-type]


def outcome_second(verdict: str | None) -> str:
    """The outcome for the reply shown as B."""
    return {"A": LOSS, "B": WIN, "C": TIE}.get(verdict, UNPARSEABLE)  # type: ignore[arg-type]


def combine_orders(verdict_shown_first: str | None, verdict_shown_second: str | None) -> tuple[str, bool]:
    """``(outcome, inconsistent)`` for a reply judged once as A and once as B.

    A win or loss needs both orders to agree; any other pair of parsed verdicts is a tie, flagged
    ``inconsistent`` when the orders contradict each other (not when both said tie). An unparseable verdict
    in either order makes the pair unparseable: it is counted and shown, not scored.
    """
    first, second = outcome_first(verdict_shown_first), outcome_second(verdict_shown_second)
    if UNPARSEABLE in (first, second):
        return UNPARSEABLE, False
    if first == second:
        return first, False
    return TIE, True
