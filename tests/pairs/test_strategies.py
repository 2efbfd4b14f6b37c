"""Negative strategies, checked by hand: derangements, groups, determinism, dropped sentences."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mipo.pairs.strategies import NegativeError
from mipo.pairs.strategies._derangement import cyclic_derangement
from mipo.pairs.strategies.drop_sentence import drop_sentence, drop_sentence_negatives
from mipo.pairs.strategies.incomplete import incomplete_negative
from mipo.pairs.strategies.other_context import other_context_negatives
from mipo.pairs.strategies.random_prompt import random_negatives
from mipo.prompts.records import PromptRecord


def records(texts, groups=None, contexts=None):
    groups = groups or [None] * len(texts)
    contexts = contexts or [None] * len(texts)
    return [
        PromptRecord(id=str(i), prompt=t, group=g, context=c)
        for i, (t, g, c) in enumerate(zip(texts, groups, contexts))
    ]


@pytest.mark.parametrize("seed", range(5))
def test_random_never_pairs_a_prompt_with_itself_or_a_duplicate(seed):
    texts = ["a", "b", "a", "c", "d", "b", "e"]
    picks = random_negatives(records(texts), seed=seed)
    for i, (j,) in enumerate(picks):
        assert texts[j] != texts[i]
    # Over distinct texts it is a permutation: every distinct prompt is someone's negative exactly once.
    first = {t: texts.index(t) for t in texts}
    by_distinct = {texts[i]: js[0] for i, js in enumerate(picks)}
    assert sorted(by_distinct.values()) == sorted(first.values())
    assert all(j == first[texts[j]] for j in by_distinct.values())


def test_random_respects_groups_and_several_negatives():
    texts = ["a1", "a2", "a3", "b1", "b2", "b3"]
    groups = ["a", "a", "a", "b", "b", "b"]
    picks = random_negatives(records(texts, groups), seed=3, count=2)
    for i, js in enumerate(picks):
        assert len(set(js)) == 2 and i not in js
        assert all(groups[j] == groups[i] for j in js)
    assert Counter(j for js in picks for j in js) == Counter({i: 2 for i in range(6)})


def test_random_is_deterministic_for_a_seed():
    recs = records([f"p{i}" for i in range(20)])
    assert random_negatives(recs, seed=7) == random_negatives(recs, seed=7)
    assert any(random_negatives(recs, seed=s) != random_negatives(recs, seed=7) for s in range(3))


def test_too_few_distinct_prompts_is_an_error_naming_the_group():
    with pytest.raises(NegativeError, match="1 distinct prompt"):
        random_negatives(records(["same", "same"]))
    with pytest.raises(NegativeError, match="group 'b'") as e:
        random_negatives(records(["x", "y", "z"], ["a", "a", "b"]))
    assert e.value.index == 2
    with pytest.raises(NegativeError, match="need at least 3"):
        cyclic_derangement(["x", "y"], count=2)


def test_incomplete_removes_context_and_optionally_system():
    record = PromptRecord(id="1", prompt="Q", context="C", system="S")
    assert incomplete_negative(record).context is None and incomplete_negative(record).system == "S"
    assert incomplete_negative(record, drop_system=True).system is None
    with pytest.raises(NegativeError, match="no context"):
        incomplete_negative(PromptRecord(id="2", prompt="Q"))


def test_other_context_takes_a_different_context():
    recs = records(["q1", "q2", "q3", "q4"], contexts=["c1", "c2", "c1", "c3"])
    for record, (negative,) in zip(recs, other_context_negatives(recs, seed=1)):
        assert negative.prompt == record.prompt and negative.context != record.context
    with pytest.raises(NegativeError, match="no context"):
        other_context_negatives(records(["q1", "q2"], contexts=["c1", None]))


def test_mixed_gives_each_record_incompletes_then_other_contexts():
    from mipo.pairs.strategies import STRATEGIES, negative_strategies
    from mipo.pairs.strategies.mixed import mixed

    recs = records(["q1", "q2", "q3"], contexts=["c1", "c2", "c3"])
    for record, negatives in zip(recs, mixed(recs, random.Random(0), 2, None)):
        assert [n.context for n in negatives[:2]] == [None, None]  # incomplete's: the question alone, k times
        assert all(n.prompt == record.prompt for n in negatives)
        assert all(n.context not in (None, record.context) for n in negatives[2:])  # another user's
    assert (
        negative_strategies("mixed", STRATEGIES.get("mixed"), 2) == ["incomplete"] * 2 + ["other-context"] * 2
    )
    assert negative_strategies("incomplete", STRATEGIES.get("incomplete"), 2) == ["incomplete"] * 2
    with pytest.raises(NegativeError, match="no context"):
        mixed(records(["q1", "q2"], contexts=["c1", None]), random.Random(0), 1, None)


def test_drop_sentence_never_drops_the_question():
    text = "Tom has 3 apples. He buys 2 more. How many apples does he have?"
    seen = set()
    for seed in range(20):
        out, k = drop_sentence(text, random.Random(seed))
        seen.add(out)
        assert out.endswith("How many apples does he have?") and k in (0, 1)
    assert seen == {
        "He buys 2 more. How many apples does he have?",
        "Tom has 3 apples. How many apples does he have?",
    }
    assert drop_sentence("Just one question?", random.Random(0)) is None
    negs = drop_sentence_negatives(records([text, "One?"]), seed=0, count=5)
    assert len(negs[0]) == 2 and len({n.prompt for n in negs[0]}) == 2 and negs[1] == []
