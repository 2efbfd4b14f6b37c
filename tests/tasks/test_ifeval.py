"""The ``ifeval`` task: IFEval's instructions in IFEval's words as the user's context, scored by IFEval's code."""

from __future__ import annotations

import json
import random

from mipo.tasks import ifeval, load_task

# instruction id -> (kwargs, a reply that follows it, a reply that does not), by IFEval's strict check
CASES = {
    "change_case:english_lowercase": (
        {},
        "paris is the capital of france and a lovely city.",
        "Paris is lovely.",
    ),
    "change_case:english_capital": (
        {},
        "PARIS IS THE CAPITAL OF FRANCE AND A LOVELY CITY.",
        "PARIS is lovely.",
    ),
    "punctuation:no_comma": ({}, "It is Paris in France.", "It is Paris, in France."),
    "startend:quotation": ({}, '"It is Paris."', 'It is "Paris".'),
    "startend:end_checker": ({"end_phrase": "Any other questions?"}, "Paris. Any other questions?", "Paris."),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Paris.\n\nP.S. Go in May.", "Paris."),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        "Go to [street] in [city].",
        "Go [here].",
    ),
    "detectable_format:title": ({}, "<<Paris>>\nIt is Paris.", "Paris\nIt is Paris."),
    "detectable_format:json_format": ({}, '```json\n{"capital": "Paris"}\n```', "capital: Paris"),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* Paris\n* France", "* Paris"),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 1},
        "It is *Paris*.",
        "It is Paris.",
    ),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nParis.\nSection 2\nFrance.",
        "Paris. France.",
    ),
    "length_constraints:number_words": (
        {"relation": "less than", "num_words": 5},
        "It is Paris.",
        "It is the city of Paris.",
    ),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "Paris.\n***\nFrance.", "Paris. France."),
    "keywords:existence": ({"keywords": ["ocean", "sand"]}, "Ocean and sand.", "Ocean only."),
    "keywords:forbidden_words": ({"forbidden_words": ["very"]}, "It is nice.", "It is very nice."),
}


def item(profile, question="What is the capital of France?"):
    from mipo.tasks import Item

    instructions = [{"id": i, "kwargs": k, "text": ifeval.description(i, k)} for i, k in profile]
    return Item("x", question, ifeval.context_text(instructions), meta={"instructions": instructions})


def test_every_instruction_type_is_checked_by_ifevals_code_with_no_downloaded_data(monkeypatch, tmp_path):
    import socket

    import nltk
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    # No network and no NLTK data: an instruction that needs either (number_sentences: punkt) fails here.
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(
        socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("no network"))
    )
    assert set(CASES) == set(ifeval.INSTRUCTIONS)
    for instruction_id, (kwargs, following, violating) in CASES.items():
        scored = [
            ifeval.score(item([(instruction_id, kwargs)]), reply) for reply in (following, violating, " ")
        ]
        assert [s["score"] for s in scored] == [1.0, 0.0, 0.0], instruction_id
        own = INSTRUCTION_DICT[instruction_id](instruction_id)
        own.build_description(**kwargs)
        assert own.check_following(following) and not own.check_following(violating), instruction_id


def test_a_profile_is_stated_in_ifevals_own_words_and_scored_per_instruction():
    profile = [("punctuation:no_comma", {}), ("startend:end_checker", {"end_phrase": "Any other questions?"})]
    stated = item(profile)
    assert stated.context == (
        "In your entire response, refrain from the use of any commas. Finish your response with this exact "
        "phrase Any other questions?. No other words should follow this phrase."
    )
    half = ifeval.score(stated, "It is Paris.")
    assert half["score"] == 0.5 and half["verdict"] is False
    assert [(v["type"], v["followed"]) for v in half["preferences"]] == [
        ("punctuation:no_comma", True),
        ("startend:end_checker", False),
    ]
    assert ifeval.score(stated, "Yes, it is Paris.")["score"] == 0.0
    full = ifeval.score(stated, "It is Paris. Any other questions?")
    assert full["score"] == 1.0 and full["verdict"] is True
    # IFEval's loose check forgives a first line of chatter; the strict one (the score) does not.
    loose = ifeval.score(item([("startend:quotation", {})]), 'Sure!\n"It is Paris."')
    assert loose["preferences"][0] == {
        "type": "startend:quotation",
        "text": "Wrap your entire response with double quotation marks.",
        "followed": False,
        "followed_loose": True,
    }


def test_profiles_hold_no_instructions_ifeval_calls_conflicting():
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    sizes = set()
    for seed in range(300):
        profile = ifeval.draw_profile(random.Random(seed))
        sizes.add(len(profile))
        ids = [p["id"] for p in profile]
        for a in ids:
            for b in ids:
                assert a == b or (b not in INSTRUCTION_CONFLICTS[a] and a not in INSTRUCTION_CONFLICTS[b]), (
                    ids
                )
        for p in profile:
            assert p["text"] == ifeval.description(p["id"], p["kwargs"])
    assert sizes == {1, 2, 3}


def test_train_and_test_questions_never_meet_and_test_profiles_are_fixed():
    task = load_task("ifeval")
    assert task.kind == "generate" and len(task.items) >= 50
    assert all(i.context and i.meta["instructions"] for i in task.items)
    assert [i.context for i in load_task("ifeval").items] == [i.context for i in task.items]
    train = ifeval.train_records(profiles_per_question=2)
    test_questions = {i.prompt for i in task.items}
    assert not test_questions & {r["prompt"] for r in train}
    assert len(train) == 2 * len({r["meta"]["question_id"] for r in train})
    assert {i.prompt for i in load_task("prefs").items} == test_questions  # prefs's questions and split
    seen = {p["id"] for i in task.items for p in i.meta["instructions"]}
    assert seen == set(ifeval.INSTRUCTIONS)


def test_pairs_train_and_eval_run_end_to_end_on_the_ifeval_task(tmp_path, tiny_model_dir, cli, monkeypatch):
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "train.jsonl"
    code, stdout, err = cli("eval", "--task", "ifeval", "--export-train", prompts, "--limit", "4")
    assert code == 0 and "wrote 4 train prompt records" in stdout, err
    record = json.loads(prompts.read_text().splitlines()[0])
    assert record["context"] == ifeval.context_text(record["meta"]["instructions"])
    code, _, err = cli(
        "pairs", "--model", tiny_model_dir, "--prompts", prompts, "--strategy", "incomplete", "--out",
        tmp_path / "pairs.jsonl", "--temperature", "1", "--max-new-tokens", "6", "--workers", "1", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", tmp_path / "pairs.jsonl", "--out", tmp_path / "run",
        "--max_steps", "1", "--batch-size", "2", "--max-length", "128",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = cli(
        "eval", "--task", "ifeval", "--limit", "3", "--model", tmp_path / "run", "--baseline", tiny_model_dir,
        "--max-new-tokens", "6", "--seeds", "0", "--n-bootstrap", "100", "--workers", "1", "--out",
        tmp_path / "eval", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    entry = json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"]["ifeval"]
    assert set(entry["model"]["per_preference"]) <= set(ifeval.INSTRUCTIONS)
    assert entry["context_effect"]["n"] == 3
    rows = [
        json.loads(line) for line in (tmp_path / "eval" / entry["examples"]["model"]).read_text().splitlines()
    ]
    assert [r["score"] for r in rows] == [
        ifeval.score(i, r["response"])["score"] for i, r in zip(load_task("ifeval", limit=3).items, rows)
    ]
