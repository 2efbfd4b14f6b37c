"""What every judge is: requests in, one verdict per request out, with the raw text behind it.

A judge compares two replies to one question and answers ``"A"``, ``"B"``, ``"C"`` (a tie) or ``None``
(nothing parseable came back). Judges stream their verdicts (``stream``) so the caller can write each one
to the verdict cache as it arrives: a killed run loses at most the verdicts in flight.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from mipo.evaluation.judges.template import Template

VERDICTS = ("A", "B", "C")  # C is the tie
VERDICT_MODES = ("auto", "logprobs", "text")  # how a judge reads its verdict (see docs/judges.md)


class JudgeRequest(NamedTuple):
    """One comparison: the user's question, their context (or None), and the two replies in this order."""

    question: str
    context: str | None
    answer_a: str
    answer_b: str


@dataclass
class Judgment:
    """A judge's answer to one request.

    ``probs`` holds the probabilities of the verdict tokens A/B/C (normalized over the three) where the
    verdict was read from log-probabilities, and ``mass`` their total probability before normalizing: a
    judge that puts little mass on them was not answering the question it was asked.
    """

    verdict: str | None  # "A", "B", "C" (tie) or None (unparseable)
    raw: str  # the judge's text, or the verdict-token probabilities it was read from
    probs: dict[str, float] | None = None
    mass: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "raw": self.raw, "probs": self.probs, "mass": self.mass}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Judgment:
        return cls(row.get("verdict"), row.get("raw", ""), row.get("probs"), row.get("mass"))


class Judge:
    """Base of the built-in judges. A judge kind registered in ``JUDGES`` is a callable
    ``kind(name, **settings) -> Judge``; a subclass sets ``name`` and implements ``identity`` and ``stream``.
    """

    name: str = ""

    def identity(self) -> dict[str, Any]:
        """Everything that changes this judge's verdicts (the verdict cache keys on it)."""
        raise NotImplementedError

    def stream(self, requests: list[JudgeRequest], template: Template) -> Iterator[tuple[int, Judgment]]:
        """Yield ``(index into requests, judgment)`` for every request, in any order."""
        raise NotImplementedError

    def judge(self, requests: list[JudgeRequest], template: Template) -> list[Judgment]:
        """Every request's judgment, in input order (no cache: see ``mipo.evaluation.judges.cache.judge_cached``)."""
        out: list[Judgment | None] = [None] * len(requests)
        for index, judgment in self.stream([JudgeRequest(*r) for r in requests], template):
            out[index] = judgment
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Free what the judge holds (a model in memory, a connection pool)."""
