"""Task data, preference checkers, answer extraction, splits and the user's own item files."""

import json
import random

import pytest

from mipo.core.errors import ConfigError, InputError
from mipo.tasks import build_messages, load_task, prefs
from mipo.tasks.gsm8k import extract_answer, normalize_number
from mipo.tasks.multiple_choice import extract_letter

# type -> (params, a reply that follows, a reply that violates)
CHECKER_CASES = {
    "lowercase": ({}, "paris is the capital of france.", "Paris is the capital of France."),
    "all_caps": ({}, "PARIS IS THE CAPITAL!", "PARIS is the capital!"),
    "max_words": ({"n": 5}, "It is Paris, friend.", "The capital of France is the city of Paris."),
    "min_words": ({"n": 6}, "The capital of France is Paris, of course.", "Paris."),
    "max_sentences": ({"n": 2}, "It is Paris. Lovely city!", "It is Paris. Lovely city! Go there."),
    "end_question": ({}, "It is Paris. Have you been there?", "It is Paris? Yes, it is Paris."),
    "end_exclamation": ({}, "It is Paris!", "It is Paris."),
    "sign_off": ({"phrase": "Take care"}, "It is Paris.\n\nTake care!", "Take care: it is Paris."),
    "postscript": ({}, "It is Paris.\n\nP.S. Visit in spring.", "It is Paris. Pass the salt."),
    "start_word": ({"word": "Sure"}, "Sure! It is Paris.", "It is Paris, sure."),
    "title": ({}, "# The capital\nIt is Paris.", "The capital\nIt is Paris. # not a title"),
    "quoted": ({}, '"It is Paris."', 'It is "Paris".'),
    "keyword": ({"word": "ocean"}, "Paris is far from the Ocean.", "Paris has oceanic weather."),
    "forbidden_word": ({"word": "very"}, "Paris is everything.", "Paris is very nice."),
    "name": ({"name": "Ravi"}, "Ravi, it is Paris.", "It is Paris, Ravioli."),
    "bullet_list": ({}, "Facts:\n- Paris\n- France", "Facts: - Paris - France"),
    "single_paragraph": ({}, "It is Paris. A fine city.", "It is Paris.\nA fine city."),
    "no_commas": ({}, "It is Paris in France.", "It is Paris, in France."),
    "no_digits": ({}, "About two million people.", "About 2 million people."),
    "emoji": ({}, "It is Paris 🗼", "It is Paris :)"),
    "bold": ({}, "It is **Paris**.", "It is *Paris*."),
}


def test_there_are_at_least_15_preference_types_each_tested():
    assert len(prefs.PREFERENCE_TYPES) >= 15
    assert set(CHECKER_CASES) == set(prefs.PREFERENCE_TYPES)
    for kind in prefs.PREFERENCE_TYPES.values():
        assert len(kind.phrasings) >= 3, kind.name


@pytest.mark.parametrize("name", sorted(CHECKER_CASES))
def test_checker_follows_and_violates(name):
    params, following, violating = CHECKER_CASES[name]
    preference = {"type": name, "params": params, "text": ""}
    assert prefs.follows(preference, following) is True
    assert prefs.follows(preference, violating) is False
    assert prefs.follows(preference, "   ") is False  # an empty reply follows nothing


def test_profiles_hold_one_to_three_compatible_preferences():
    sizes = set()
    for seed in range(200):
        profile = prefs.draw_profile(random.Random(seed))
        sizes.add(len(profile))
        slots = [prefs.PREFERENCE_TYPES[p["type"]].slots for p in profile]
        for i in range(len(slots)):
            for j in range(i + 1, len(slots)):
                assert not slots[i] & slots[j], profile
        for p in profile:
            assert "{" not in p["text"]  # every placeholder filled
    assert sizes == {1, 2, 3}


def test_prefs_split_never_shares_a_question_and_is_deterministic(tmp_path):
    test_items = load_task("prefs").items
    train = prefs.train_records()
    assert len(test_items) >= 60 and len(train) >= 40
    assert not {r["prompt"] for r in train} & {i.prompt for i in test_items}
    assert {i.meta["source"] for i in test_items} == {"mt-bench", "gsm8k"}
    assert [i.id for i in load_task("prefs").items] == [i.id for i in test_items]
    path = prefs.export_train_prompts(
        tmp_path / "train.jsonl", n_questions=20, profiles_per_question=2, seed=1
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 40
    assert set(rows[0]) == {"id", "prompt", "context", "meta"}
    assert rows[0]["context"].startswith("About me: ")
    assert "answer" not in rows[0]
    assert len({r["id"] for r in rows}) == 40


def test_preference_types_can_be_restricted(tmp_path):
    chosen = ["lowercase", "max_words", "end_question", "keyword"]
    items = load_task("prefs", preference_types=chosen).items
    assert {p["type"] for i in items for p in i.meta["preferences"]} <= set(chosen)
    rows = prefs.train_records(n_questions=10, types=["no_commas"])
    assert all([p["type"] for p in r["meta"]["preferences"]] == ["no_commas"] for r in rows)
    with pytest.raises(ConfigError, match="unknown preference type"):
        load_task("prefs", preference_types=["nope"])


def test_prefs_score_is_the_fraction_followed():
    item = load_task("prefs").items[0]
    item.meta["preferences"] = [
        {"type": "lowercase", "params": {}, "text": "lowercase"},
        {"type": "no_commas", "params": {}, "text": "no commas"},
    ]
    result = prefs.score(item, "hello, world")
    assert result["score"] == 0.5
    assert [v["followed"] for v in result["preferences"]] == [True, False]


def test_build_messages_puts_context_in_a_system_message():
    assert build_messages("Q?", "About me: short.") == [
        {"role": "system", "content": "About me: short."},
        {"role": "user", "content": "Q?"},
    ]
    assert (
        build_messages("Q?", "About me: short.", "Be kind.")[0]["content"] == "Be kind.\n\nAbout me: short."
    )
    assert build_messages("Q?", "About me: short.", context_mode="prefix") == [
        {"role": "user", "content": "About me: short.\n\nQ?"}
    ]
    assert build_messages("Q?") == [{"role": "user", "content": "Q?"}]


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("She sells 9 eggs for $2 each.\n#### 18", "18"),
        ("16 - 3 - 4 = 9 eggs. 9 * 2 = 18. The answer is 18.", "18"),
        ("The total cost is $1,200.", "1200"),
        ("**Answer:** $1,200", "1200"),
        ("So x = 42.0", "42"),
        ("The answer is 3.50 dollars, since 7 / 2 = 3.5", "3.5"),
        ("We get \\boxed{72} apples in total, not 70.", "72"),
        ("The answer is -5.", "-5"),
        ("First 10 apples, then 2 more: 12 apples in total.", "12"),
        ("I don't know.", None),
    ],
)
def test_gsm8k_answer_extraction(reply, expected):
    assert extract_answer(reply) == expected


def test_normalize_number():
    assert normalize_number("$1,200.00") == "1200"
    assert normalize_number("0.50") == "0.5"
    assert normalize_number("abc") is None


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("(B)", "B"),
        ("Answer: b", "B"),
        ("The answer is C", "C"),
        ("The correct answer is (D) airplane.", "D"),
        ("C. refrigerator", "C"),
        ("**A**", "A"),
        ("A cat cannot fly, so I think the answer is B.", "B"),
        ("The answer is a bit unclear, but B seems right.", "B"),
        ("I would pick the television.", "B"),
        ("A lot of things could be right here.", None),
        ("I have no idea.", None),
    ],
)
def test_letter_extraction(reply, expected):
    choices = ["cellular telephone", "television", "refrigerator", "airplane"]
    assert extract_letter(reply, choices) == expected


def test_builtin_tasks_load_from_the_installed_packages():
    gsm8k = load_task("gsm8k")
    assert 900 < len(gsm8k.items) < 1319  # the held-apart share is not evaluated
    assert all(i.answer is not None for i in gsm8k.items[:50])
    assert len(load_task("gsm8k", train_split=0.0).items) == 1319
    arc = load_task("arc-challenge", limit=5)
    assert len(arc.items) == 5 and all(i.answer in "ABCDE" for i in arc.items)
    mmlu = load_task("mmlu", limit=57)
    assert len({i.meta["subject"] for i in mmlu.items}) == 57  # --limit spans every subject


def test_pmi_prompts_name_a_tasks_test_items_or_a_file(tmp_path, monkeypatch):
    gsm8k = load_task("gsm8k", limit=6)
    pmi = load_task("pmi", prompts="gsm8k", limit=6)
    assert [i.prompt for i in pmi.items] == [i.prompt for i in gsm8k.items]
    assert pmi.source == "gsm8k test items" and pmi.kind == "pmi"
    assert load_task("pmi", limit=3).source == "prefs test items"
    # a file called like a task is read as a file
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gsm8k").write_text(json.dumps({"id": "a", "prompt": "What is 2+2?"}) + "\n")
    assert [i.prompt for i in load_task("pmi", prompts="gsm8k").items] == ["What is 2+2?"]


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_task("nope")


def _write(tmp_path, rows):
    path = tmp_path / "items.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_user_file_math_and_choice(tmp_path):
    math_file = _write(
        tmp_path, [{"question": "1+1?", "answer": 2}, {"question": "Half of 5?", "answer": "2.5"}]
    )
    task = load_task(f"file:{math_file}")
    assert task.kind == "generate" and [i.answer for i in task.items] == ["2", "2.5"]
    assert task.score(task.items[0], "The answer is 2.")["score"] == 1.0
    mc_file = _write(
        tmp_path,
        [
            {"question": "Sky?", "choices": ["red", "blue"], "answer": 1},
            {"question": "Grass?", "choices": ["green", "pink"], "answer": "a"},
        ],
    )
    task = load_task(f"file:{mc_file}")
    assert task.kind == "choice" and [i.answer for i in task.items] == ["B", "A"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"question": "1+1?", "answer": "two"}], "items.jsonl:1: field 'answer': expected a number"),
        (
            [{"question": "Q", "choices": ["x", "y"], "answer": "C"}],
            "items.jsonl:1: field 'answer': expected a letter A-B",
        ),
        ([{"question": "Q", "choices": ["x"], "answer": 0}], "items.jsonl:1: field 'choices'"),
        (
            [{"question": "Q", "answer": 1}, {"question": "Q", "choices": ["x", "y"], "answer": 0}],
            "items.jsonl:2: field 'choices': items before",
        ),
        ([{"question": "Q", "answer": 1}, "{not json"], "items.jsonl:2: malformed JSON"),
        ([{"prompt": "Q", "answer": 1}], "items.jsonl:1: field 'question'"),
    ],
)
def test_user_file_errors_name_file_line_and_field(tmp_path, rows, message):
    path = _write(tmp_path, rows)
    with pytest.raises(InputError) as e:
        load_task(f"file:{path}")
    assert message in str(e.value)


def test_user_file_missing(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_task(f"file:{tmp_path / 'none.jsonl'}")


def test_task_names_come_from_the_registry_and_split_on_commas_before_a_name(tmp_path):
    from mipo.tasks import TASKS, split_task_list, task_list_help

    assert {"prefs", "gsm8k", "arc-easy", "arc-challenge", "mmlu", "pmi", "file"} <= set(TASKS.names())
    assert "file:PATH" in task_list_help() and "prefs" in task_list_help()
    assert split_task_list("prefs, file:a,b.jsonl,gsm8k") == ["prefs", "file:a,b.jsonl", "gsm8k"]
    with pytest.raises(ConfigError, match="task 'file' takes PATH: write file:PATH"):
        load_task("file")
    with pytest.raises(ConfigError, match="unknown task 'prefs:x'"):
        load_task("prefs:x")


def test_prompt_files_are_read_by_load_prompts_with_its_id_rule(tmp_path):
    # One reader for every prompt file: records without an id take their line number, as in mipo pairs.
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "Name a fruit.", "context": "About me: I like short answers.  "},
        {
            "id": "b",
            "prompt": [{"role": "user", "content": "Name a city."}],
            "chosen": "Paris.",
            "rejected": "4.",
        },
        {"prompt": "Name a colour."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_task("pmi", prompts=str(path)).items
    assert [i.id for i in items] == ["1", "b", "3"]
    assert items[0].messages() == [
        {"role": "system", "content": "About me: I like short answers."},
        {"role": "user", "content": "Name a fruit."},
    ]
    assert items[1].messages() == [{"role": "user", "content": "Name a city."}]
    assert (items[1].meta["chosen"], items[1].meta["rejected"]) == ("Paris.", "4.")
    path.write_text(
        json.dumps({"id": "a", "prompt": "x"}) + "\n" + json.dumps({"id": "a", "prompt": "y"}) + "\n"
    )
    with pytest.raises(InputError, match="prompts.jsonl:2: field 'id': id 'a' repeats line 1"):
        load_task("pmi", prompts=str(path))


def test_user_file_items_keep_their_context_and_take_a_csv(tmp_path):
    path = _write(tmp_path, [{"id": "q1", "question": "1+1?", "answer": 2, "context": "About me: terse."}])
    item = load_task(f"file:{path}").items[0]
    assert item.id == "q1" and item.messages()[0] == {"role": "system", "content": "About me: terse."}
    csv_file = tmp_path / "items.csv"
    csv_file.write_text("question,answer\n2+2?,4\n3+3?,6\n")
    task = load_task(f"file:{csv_file}")
    assert [(i.id, i.answer) for i in task.items] == [("2", "4"), ("3", "6")]


def test_export_prompts_writes_a_tasks_train_prompts(tmp_path):
    from mipo.tasks.export import PromptExportConfig, export_prompts

    path = export_prompts(PromptExportConfig(task="gsm8k", out=str(tmp_path / "g.jsonl"), limit=4))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 4 and "answer" not in rows[0]
    config = PromptExportConfig(task="prefs", out=str(tmp_path / "p.jsonl"), limit=5, profiles_per_question=2)
    assert (
        export_prompts(config).read_text()
        == prefs.export_train_prompts(
            tmp_path / "q.jsonl", n_questions=5, profiles_per_question=2
        ).read_text()
    )
    with pytest.raises(ConfigError, match="'arc-easy' has no train prompts to export"):
        PromptExportConfig(task="arc-easy", out="x.jsonl")


@pytest.mark.parametrize("task", ["prefs", "ifeval"])
def test_every_profile_crosses_every_train_question_with_every_profile_drawn(tmp_path, task):
    from mipo.tasks.export import PromptExportConfig, export_prompts

    def rows(**settings):
        path = export_prompts(
            PromptExportConfig(task=task, out=str(tmp_path / "p.jsonl"), limit=4, **settings)
        )
        return [json.loads(line) for line in path.read_text().splitlines()]

    own = rows(profiles_per_question=2)
    crossed = rows(profiles_per_question=2, every_profile=True)
    assert len(own) == 8 and len(crossed) == 4 * 8
    assert len({r["id"] for r in crossed}) == 32
    questions = {r["meta"]["question_id"]: r["prompt"] for r in own}
    profiles = {r["id"]: r["context"] for r in own}
    for qid, prompt in questions.items():
        mine = [r for r in crossed if r["meta"]["question_id"] == qid]
        assert {r["prompt"] for r in mine} == {prompt}
        assert {r["meta"]["profile_of"]: r["context"] for r in mine} == profiles  # every profile once
    assert rows(profiles_per_question=2) == own  # the default is unchanged


def test_every_profile_is_refused_where_no_profiles_are_drawn(tmp_path):
    from mipo.tasks.export import PromptExportConfig

    with pytest.raises(ConfigError, match="every_profile: 'gsm8k' draws no user profiles"):
        PromptExportConfig(task="gsm8k", out=str(tmp_path / "g.jsonl"), every_profile=True)
