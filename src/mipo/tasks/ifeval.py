"""``ifeval``: personalization checked by IFEval's own code, a second set of checkers beside ``prefs``'s.

A user states 1-3 of IFEval's instructions (Zhou et al., 2023) as their context, in IFEval's own wording
(``INSTRUCTION_DICT[id](id).build_description(**kwargs)`` of the ``if-verifiable`` package, Apache-2.0), and asks
one of ``prefs``'s questions; the score of a reply is the fraction of the instructions it follows by IFEval's
strict check (``check_following``, through the package's ``evaluate_instructions``, which also gives the loose
verdict). Questions, their train/test split and the profiles' seeds work as in ``prefs``: train questions are
exported as prompt records for ``mipo pairs``, test questions are evaluated, and the two never share a question.

Only instruction types whose check needs no downloaded data are used (``number_sentences`` and
``capital_word_frequency`` load NLTK's punkt; ``response_language`` and the rest are left out as not a user's
standing preference). Which ``prefs`` types IFEval also checks: docs/evaluation.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from mipo.core.errors import MipoError
from mipo.tasks.base import Item, Task, TaskOptions, register_task

TEST_PROFILE_SEED = 0  # test profiles never change, so scores are comparable between runs

_ENDINGS = ("Any other questions?", "Is there anything else I can help with?")  # IFEval's own end phrases


def _one_of(*choices: dict[str, Any]) -> Callable[[random.Random], dict[str, Any]]:
    return lambda rng: dict(rng.choice(choices))


def _keywords(count: int, name: str) -> Callable[[random.Random], dict[str, Any]]:
    def draw(rng: random.Random) -> dict[str, Any]:
        from if_verifiable.ifeval.instructions_util import WORD_LIST

        return {name: sorted(rng.sample(WORD_LIST, count))}  # IFEval's own word list, drawn with our seed

    return draw


# IFEval instruction id -> a draw of its keyword arguments (IFEval's own values or ranges)
INSTRUCTIONS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "change_case:english_lowercase": _one_of({}),
    "change_case:english_capital": _one_of({}),
    "punctuation:no_comma": _one_of({}),
    "startend:quotation": _one_of({}),
    "startend:end_checker": _one_of(*({"end_phrase": e} for e in _ENDINGS)),
    "detectable_content:postscript": _one_of({"postscript_marker": "P.S."}, {"postscript_marker": "P.P.S"}),
    "detectable_content:number_placeholders": _one_of(*({"num_placeholders": n} for n in (1, 2, 3))),
    "detectable_format:title": _one_of({}),
    "detectable_format:json_format": _one_of({}),
    "detectable_format:number_bullet_lists": _one_of(*({"num_bullets": n} for n in (2, 3, 4, 5))),
    "detectable_format:number_highlighted_sections": _one_of(*({"num_highlights": n} for n in (1, 2, 3))),
    "detectable_format:multiple_sections": _one_of(
        *({"section_spliter": s, "num_sections": n} for s in ("Section", "SECTION") for n in (2, 3))
    ),
    "length_constraints:number_words": _one_of(
        *({"relation": "less than", "num_words": n} for n in (50, 100)),
        *({"relation": "at least", "num_words": n} for n in (100, 150)),
    ),
    "length_constraints:number_paragraphs": _one_of(*({"num_paragraphs": n} for n in (2, 3, 4))),
    "keywords:existence": _keywords(2, "keywords"),
    "keywords:forbidden_words": _keywords(2, "forbidden_words"),
}


def _registry():
    try:
        from if_verifiable.ifeval import instructions_registry
    except ImportError:
        raise MipoError("the ifeval task needs IFEval's checkers: pip install if-verifiable") from None
    return instructions_registry


def description(instruction_id: str, kwargs: dict[str, Any]) -> str:
    """The instruction in IFEval's own words."""
    return _registry().INSTRUCTION_DICT[instruction_id](instruction_id).build_description(**kwargs)


def draw_profile(rng: random.Random) -> list[dict[str, Any]]:
    """1-3 instructions no two of which IFEval lists as conflicting, each ``{"id", "kwargs", "text"}``."""
    conflicts = _registry().INSTRUCTION_CONFLICTS
    size = rng.choice((1, 2, 3))
    names = list(INSTRUCTIONS)
    rng.shuffle(names)
    profile: list[dict[str, Any]] = []
    for name in names:
        # IFEval's table is not symmetric as shipped (its conflict_make is applied by its data generator)
        if any(name in conflicts[p["id"]] or p["id"] in conflicts[name] for p in profile):
            continue
        kwargs = INSTRUCTIONS[name](rng)
        profile.append({"id": name, "kwargs": kwargs, "text": description(name, kwargs)})
        if len(profile) == size:
            break
    return profile


def context_text(profile: list[dict[str, Any]]) -> str:
    return " ".join(p["text"] for p in profile)


def _records(
    qs: list[dict[str, str]], profiles_per_question: int, seed: int, tag: str, every_profile: bool = False
) -> list[dict]:
    from mipo.tasks.prefs.items import profile_records

    def draw(qid: str, j: int) -> list[dict[str, Any]]:
        return draw_profile(random.Random(f"ifeval-{tag}:{seed}:{qid}:{j}"))

    return profile_records(
        qs, profiles_per_question, draw, context_text, "instructions", every_profile=every_profile
    )


def train_records(
    *,
    n_questions: int | None = None,
    profiles_per_question: int = 1,
    seed: int = 0,
    train_split: float = 0.2,
    every_profile: bool = False,
) -> list[dict[str, Any]]:
    """Train prompt records ``{id, prompt, context, meta}`` on ``prefs``'s train questions (no answers);
    ``every_profile`` as in ``mipo.tasks.prefs.items.profile_records``."""
    from mipo.tasks.prefs.items import questions, split_questions

    train, _ = split_questions(questions(train_split=train_split))
    return _records(train[:n_questions], profiles_per_question, seed, "train", every_profile)


def task(*, train_split: float = 0.2) -> Task:
    """The test items: each of ``prefs``'s test questions with a fixed profile of IFEval instructions."""
    from mipo.tasks.prefs.items import questions, split_questions

    _, test = split_questions(questions(train_split=train_split))
    items = [
        Item(r["id"], r["prompt"], r["context"], meta=r["meta"])
        for r in _records(test, 1, TEST_PROFILE_SEED, "test")
    ]
    metric = "fraction of the stated IFEval instructions followed (IFEval's strict check)"
    return Task("ifeval", "generate", items, score, metric, "mt-bench + gsm8k, IFEval's instructions")


def score(item: Item, response: str) -> dict[str, Any]:
    """IFEval's verdicts on ``response``: strict (the score) and loose, per instruction, by its own code."""
    import langdetect
    from if_verifiable.common import evaluate_instructions

    langdetect.DetectorFactory.seed = 0  # the case checks detect English; unseeded, a verdict can vary by run
    profile = item.meta["instructions"]
    results, _ = evaluate_instructions(
        response,
        [p["id"] for p in profile],
        [p["kwargs"] for p in profile],
        item.question,
        _registry().INSTRUCTION_DICT,
    )
    passed = {r.instruction_id: r for r in results}  # none for an empty reply: nothing is followed
    verdicts = [
        {
            "type": p["id"],
            "text": p["text"],
            "followed": bool(p["id"] in passed and passed[p["id"]].strict_pass),
            "followed_loose": bool(p["id"] in passed and passed[p["id"]].loose_pass),
        }
        for p in profile
    ]
    fraction = sum(v["followed"] for v in verdicts) / len(verdicts)
    return {"score": fraction, "extracted": None, "verdict": fraction == 1.0, "preferences": verdicts}


def _train_prompts(config) -> list[dict[str, Any]]:
    return train_records(
        n_questions=config.limit,
        profiles_per_question=config.profiles_per_question,
        seed=config.export_seed,
        train_split=config.train_split,
        every_profile=config.every_profile,
    )


@register_task(
    "ifeval",
    "personalization checked by IFEval's own code: the fraction of a user's IFEval instructions followed",
    train_prompts=_train_prompts,
)
def _build(options: TaskOptions) -> Task:
    return task(train_split=options.train_split)
