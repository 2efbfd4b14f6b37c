"""LLM judges: compare two replies to the same prompt, as the field does (FastChat MT-Bench pairwise).

- ``JUDGES``: judge kinds by name. Built-ins: ``local`` (a model mipo loads: built-in name, Hub id or
  folder; ``mipo.evaluation.judges.local``) and ``openai`` (any OpenAI-compatible endpoint: ``vllm serve``, llama.cpp's
  server, Ollama, hosted APIs; ``mipo.evaluation.judges.endpoint``). A plugin registers a kind the same way.
- ``make_judge``: a judge from the CLI's words (``--judge``, ``--judge-url``, ``--judge-key-env``).
- ``judge_pairwise``: the model's replies against the baseline's, each pair in both orders, summarized as
  wins/losses/ties, win rate with CI and sign test, and the length-controlled win rate.
- ``judge_check``: how often the judge agrees with the ``prefs`` checkers where they tell two replies apart.

See docs/judges.md.
"""

from __future__ import annotations

from typing import Any

from mipo.core.registry import Registry
from mipo.evaluation.judges.base import VERDICTS, Judge, JudgeRequest, Judgment

JUDGES: Registry[Any] = Registry("judge", "mipo.evaluation.judges")


def make_judge(name: str, *, url: str | None = None, kind: str | None = None, **settings: Any) -> Judge:
    """The judge called ``name``: a model served at ``url`` (kind ``openai``) when a URL is given, else a
    model mipo loads itself (kind ``local``). ``settings`` go to the kind (see each module)."""
    kind = kind or ("openai" if url else "local")
    factory = JUDGES.get(kind)
    if url is not None:
        settings["url"] = url
    return factory(name, **settings)


from mipo.evaluation.judges.pairwise import checker_pairs, judge_check, judge_pairwise  # noqa: E402
from mipo.evaluation.judges.template import BUILTIN_TEMPLATES, Template, load_template  # noqa: E402
from mipo.formats.results import summary_line  # noqa: E402

__all__ = [
    "BUILTIN_TEMPLATES",
    "JUDGES",
    "VERDICTS",
    "Judge",
    "JudgeRequest",
    "Judgment",
    "Template",
    "checker_pairs",
    "judge_check",
    "judge_pairwise",
    "load_template",
    "make_judge",
    "summary_line",
]
