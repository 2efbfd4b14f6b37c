"""The wrong-context control: another user's context drawn per item, and the content effect it measures."""

import pytest

from mipo.evaluation.content_effect import content_effect, with_wrong_context, wrong_contexts
from mipo.evaluation.context_effect import summarize, verdict
from mipo.tasks import Item, load_task


def test_the_draw_is_seeded_and_takes_a_profile_whose_preference_differs():
    task = load_task("prefs", limit=20)
    first, again = wrong_contexts(task.items, seed=0), wrong_contexts(task.items, seed=0)
    assert first == again and None not in first
    assert wrong_contexts(task.items, seed=1) != first
    for i, donor in enumerate(first):
        own, other = task.items[i], task.items[donor]
        assert donor != i and other.context != own.context
        assert [(p["type"], p["params"]) for p in other.meta["preferences"]] != [
            (p["type"], p["params"]) for p in own.meta["preferences"]
        ]
    answered, drawn = with_wrong_context(task, seed=0)
    assert [item.id for item in answered.items] == [item.id for item in task.items]
    for item, own in zip(answered.items, task.items):
        # another user's context, the item's own question and stated preferences (what the score reads)
        assert item.context == task.items[first[task.items.index(own)]].context
        assert (item.prompt, item.meta) == (own.prompt, own.meta)
        assert drawn[item.id] == task.items[first[task.items.index(own)]].id


def test_items_with_no_other_preference_or_no_context_get_no_wrong_context():
    same = {"preferences": [{"type": "lowercase", "params": {}, "text": "lowercase please"}]}
    items = [
        Item("a", "Q1", "I like lowercase.", meta=same),
        Item("b", "Q2", "Lowercase only.", meta=same),
        Item("c", "Q3", None),
    ]
    assert wrong_contexts(items, seed=0) == [None, None, None]
    # without stated preferences, the context text is what a user wants
    plain = [Item("a", "Q1", "Be brief."), Item("b", "Q2", "Be brief."), Item("c", "Q3", "Use French.")]
    assert wrong_contexts(plain, seed=0) == [2, 2, 0]


def test_content_effect_by_hand():
    # the model gains +1 with its own context on items 0 and 1, and as much with a wrong context on item 1
    s = content_effect([1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0], n_resamples=200)
    assert s["mean"] == pytest.approx(1 / 3) and s["n"] == 3
    with pytest.raises(ValueError, match="differ in length"):
        content_effect([1.0], [1.0, 0.0], [1.0], [1.0])


def _rows(scores):
    return {0: [{"score": s} for s in scores]}


def test_the_verdict_calls_a_gain_personalization_only_when_the_content_effect_is_clear_of_zero():
    ones, zeros = [1.0] * 8, [0.0] * 8
    arms = {"model_with": ones, "model_without": zeros, "baseline_with": zeros, "baseline_without": zeros}
    arms = {arm: _rows(scores) for arm, scores in arms.items()}
    # the model follows as well under another user's context: it reacts to any context
    any_context = {"model_own": ones, "model_wrong": ones, "baseline_own": zeros, "baseline_wrong": zeros}
    s = summarize(arms, wrong={k: _rows(v) for k, v in any_context.items()}, n_resamples=200)
    assert s["context_effect"]["mean"] == 1.0 and s["content_effect"]["mean"] == 0.0
    assert s["verdict"].startswith("the gain comes with any user's context, not with what it says")
    assert set(s["scores"]) == {
        "model_with",
        "model_without",
        "baseline_with",
        "baseline_without",
        "model_wrong",
        "baseline_wrong",
    }
    # only with its own context: it reads what the context says
    reads = {**any_context, "model_wrong": zeros}
    s = summarize(arms, wrong={k: _rows(v) for k, v in reads.items()}, n_resamples=200)
    assert s["verdict"].startswith("gain is personalization: content effect +1.000 [+1.000, +1.000]")
    # no baseline: the model's own scores with its context and with another's
    alone = {k: v for k, v in arms.items() if k.startswith("model")}
    s = summarize(alone, wrong={k: _rows(reads[k]) for k in ("model_own", "model_wrong")}, n_resamples=200)
    assert s["content_lift"]["mean"] == 1.0 and "than with another user's context" in s["verdict"]


def test_without_a_content_effect_the_verdict_is_the_context_effects():
    shift = {"mean": 0.0, "ci": [0.0, 0.0]}
    summary = {"context_effect": {"mean": 0.2, "ci": [0.1, 0.3]}, "generic_shift": shift, "gain": shift}
    assert verdict(summary).startswith("gain is personalization: context effect +0.200")


def test_an_unattributed_gain_names_every_part_that_is_not_clear_of_zero():
    unclear = {"mean": 0.05, "ci": [-0.01, 0.11]}
    summary = {"context_effect": unclear, "generic_shift": unclear, "gain": {"mean": 0.1, "ci": [0.02, 0.2]}}
    assert verdict(summary) == (
        "gain of +0.100 [+0.020, +0.200] not attributed: neither the context effect (+0.050 [-0.010, +0.110]) "
        "nor the generic shift (+0.050 [-0.010, +0.110]) is clear of zero"
    )
    summary["content_effect"] = unclear
    assert verdict(summary).endswith(
        "none of the context effect (+0.050 [-0.010, +0.110]), the generic shift (+0.050 [-0.010, +0.110]) and "
        "the content effect (+0.050 [-0.010, +0.110]) is clear of zero"
    )
