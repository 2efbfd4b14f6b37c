"""The paper's personalization data (prism, community-alignment, multifaceted-bench, prefeval), offline.

Each test writes a tiny copy of a dataset in the Hub repository's own layout and schema (file names,
column names, nesting; see docs/datasets.md for the sources) and reads it through the code path a Hub id
takes: the folder stands where the Hub id would (``datasets.load_dataset(FOLDER, ...)``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mipo.core.errors import ConfigError, MipoError
from mipo.prompts.records import load_prompts
from mipo.tasks import load_task
from mipo.tasks.export import PromptExportConfig, export_prompts
from mipo.tasks.personal import prompt_records

PRISM_README = """---
license: cc
configs:
- config_name: survey
  data_files: "survey.jsonl"
- config_name: conversations
  data_files: "conversations.jsonl"
---
# Dataset Card for PRISM
"""


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def survey_row(user: int) -> dict:
    return {
        "user_id": f"user{user}",
        "survey_only": False,
        "num_completed_conversations": 2,
        "lm_familiarity": "Very familiar",
        "self_description": f"I am user {user}. I value honesty and family.",
        "system_string": f"Be brief and kind to user {user}.",
        "age": "25-34 years old",
        "gender": "Female",
        "stated_prefs": {"values": 50, "creativity": 70, "fluency": 90, "other_text": None},
        "included_in_balanced_subset": True,
    }


def conversation_row(user: int, k: int) -> dict:
    opening = f"Question {k} from user {user}?"
    return {
        "conversation_id": f"c{user}-{k}",
        "user_id": f"user{user}",
        "included_in_balanced_subset": True,
        "conversation_type": "unguided",
        "opening_prompt": opening,
        "conversation_turns": 2,
        "conversation_history": [
            {"turn": 0, "role": "user", "content": opening, "within_turn_id": None, "if_chosen": None},
            {"turn": 0, "role": "model", "content": "An answer.", "within_turn_id": 0, "if_chosen": True},
        ],
        "open_feedback": "Fine.",
    }


@pytest.fixture()
def prism_folder(tmp_path) -> Path:
    """PRISM's repository layout: survey.jsonl and conversations.jsonl with its README's configs; user 9
    has conversations but no survey row."""
    folder = tmp_path / "prism-alignment"
    write_jsonl(folder / "survey.jsonl", [survey_row(u) for u in range(8)])
    write_jsonl(
        folder / "conversations.jsonl", [conversation_row(u, k) for u in [*range(8), 9] for k in range(3)]
    )
    (folder / "README.md").write_text(PRISM_README, encoding="utf-8")
    return folder


def test_prism_maps_opening_prompts_to_their_users_survey_text(prism_folder):
    records = {r["id"]: r for r in prompt_records(load_dataset("prism"), str(prism_folder), "all")}
    assert len(records) == 24  # 8 users x 3 conversations; user 9 has no survey row
    first = records["c3-1"]
    assert first["prompt"] == "Question 1 from user 3?"
    assert first["context"] == (
        "About me: I am user 3. I value honesty and family.\n"
        "How I want an AI assistant to behave: Be brief and kind to user 3."
    )
    assert first["meta"]["user"] == "user3" and first["meta"]["conversation_type"] == "unguided"


def test_prism_splits_users_not_conversations(prism_folder):
    dataset = load_dataset("prism")
    train = prompt_records(dataset, str(prism_folder), "train")
    test = prompt_records(dataset, str(prism_folder), "test")
    train_users, test_users = {r["meta"]["user"] for r in train}, {r["meta"]["user"] for r in test}
    assert train_users and test_users and not train_users & test_users
    assert len(train) + len(test) == 24
    assert [r["id"] for r in prompt_records(dataset, str(prism_folder), "test")] == [r["id"] for r in test]


def test_prism_task_from_the_environment_setting_is_unscored_with_contexts(prism_folder, monkeypatch):
    monkeypatch.setenv("MIPO_PRISM", str(prism_folder))
    task = load_task("prism", limit=3)
    assert task.score is None and task.kind == "generate" and task.source == str(prism_folder)
    assert len(task.items) == 3 and all(item.context.startswith("About me: ") for item in task.items)
    messages = task.items[0].messages()
    assert messages[0]["role"] == "system" and messages[0]["content"] == task.items[0].context
    assert messages[1] == {"role": "user", "content": task.items[0].prompt}
    test_ids = {r["id"] for r in prompt_records(load_dataset("prism"), str(prism_folder), "test")}
    assert {item.id for item in task.items} <= test_ids


def test_prism_as_prompts_and_as_the_tasks_train_export(prism_folder, tmp_path):
    records = load_prompts(f"prism:{prism_folder}")  # what mipo pairs --prompts prism:FOLDER reads
    train = prompt_records(load_dataset("prism"), str(prism_folder), "train")
    assert [r.id for r in records] == [r["id"] for r in train]
    assert records[0].context == train[0]["context"] and records[0].meta["user"] == train[0]["meta"]["user"]
    assert len(load_prompts(f"prism:{prism_folder}", split="test")) == 24 - len(train)

    out = export_prompts(
        PromptExportConfig(task=f"prism:{prism_folder}", out=str(tmp_path / "train.jsonl"), limit=2)
    )
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == train[:2]


def ca_row(conversation: int, annotator: str, prompt: str, country: str) -> dict:
    row = {
        "conversation_id": conversation,
        "annotator_id": annotator,
        "assigned_lang": "en",
        "is_pregenerated_first_prompt": True,
        "first_turn_prompt": prompt,
        "first_turn_preferred_response": "response_b",
        "first_turn_feedback": "B is kinder.",
        "annotator_age": "25-34",
        "annotator_gender": "Female",
        "annotator_education_level": "Bachelor's degree",
        "annotator_political": "Moderate",
        "annotator_ethnicity": "",
        "annotator_country": country,
    }
    row.update({f"first_turn_response_{s}": f"reply {s}" for s in "abcd"})
    row.update({f"second_turn_{k}": "" for k in ("prompt", "response_a", "preferred_response")})
    return row


def write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_community_alignment_profile_from_the_annotator_columns(tmp_path):
    folder = tmp_path / "community-alignment-dataset"
    folder.mkdir()
    rows = [ca_row(100 + i, f"ann{i % 6}", f"Shared question {i % 4}?", "India") for i in range(24)]
    rows.append(ca_row(200, "ann9", "", "India"))  # no first prompt: skipped
    write_csv(folder / "community_alignment.csv", rows)
    records = prompt_records(load_dataset("community-alignment"), str(folder), "all")
    assert len(records) == 24
    first = next(r for r in records if r["id"] == "100")
    assert first["prompt"] == "Shared question 0?"
    assert first["context"] == (
        "About me: age: 25-34; gender: Female; country: India; education: Bachelor's degree; "
        "political views: Moderate."
    )
    assert first["meta"]["user"] == "ann0" and first["meta"]["language"] == "en"
    train = prompt_records(load_dataset("community-alignment"), str(folder), "train")
    test = prompt_records(load_dataset("community-alignment"), str(folder), "test")
    assert not {r["meta"]["user"] for r in train} & {r["meta"]["user"] for r in test}
    assert len(train) + len(test) == 24


def test_community_alignment_first_release_with_full_and_filtered_splits(tmp_path):
    folder = tmp_path / "ca-v1.0"
    (folder / "data").mkdir(parents=True)
    write_csv(folder / "data" / "full_community_alignment.csv", [ca_row(1, "a", "Q1?", "Brazil")] * 2)
    write_csv(folder / "data" / "filtered_community_alignment.csv", [ca_row(1, "a", "Q1?", "Brazil")])
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: full\n"
        "    path: data/full_community_alignment.csv\n  - split: filtered\n"
        "    path: data/filtered_community_alignment.csv\n---\n",
        encoding="utf-8",
    )
    records = prompt_records(load_dataset("community-alignment"), str(folder), "all")
    assert [r["id"] for r in records] == ["1"]  # the filtered split, not both


def mfb_row(prompt: str, persona: str) -> dict:
    preferences = [
        {"dimension": d, "subdimension": "s", "preference": f"{persona} {d}", "description": "..."}
        for d in ("style", "background_knowledge", "informativeness", "harmlessness")
    ]
    rubrics = [
        {"criteria": f"Is it {persona}?", "score_descriptions": {str(k): f"level {k}" for k in range(1, 6)}}
    ]
    return {
        "source": "self-instruct",
        "preference_set": preferences,
        "system": f"You are a {persona} guide.",
        "prompt": prompt,
        "reference_answer": "A reference.",
        "rubrics": rubrics * 4,
    }


def test_multifaceted_bench_parquet_system_message_is_the_context_split_by_instruction(tmp_path):
    import datasets

    folder = tmp_path / "Multifaceted-Bench"
    rows = [
        mfb_row(f"Instruction {i % 5}.", persona) for i, persona in enumerate(["terse", "warm", "formal"] * 5)
    ]
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    dataset = load_dataset("multifaceted-bench")
    records = {r["id"]: r for r in prompt_records(dataset, str(folder), "all")}
    assert len(records) == 15
    assert (
        records["mfb-0002"]["prompt"] == "Instruction 1."
        and records["mfb-0002"]["context"] == "You are a warm guide."
    )
    assert records["mfb-0002"]["meta"]["rubrics"][0]["criteria"] == "Is it warm?"
    train = {r["prompt"] for r in prompt_records(dataset, str(folder), "train")}
    test = {r["prompt"] for r in prompt_records(dataset, str(folder), "test")}
    assert train and test and not train & test


def prefeval_rows(n: int) -> list[dict]:
    return [
        {
            "preference": f"I am allergic to ingredient {i % 7}.",
            "question": f"What should I cook tonight, version {i}?",
            "explanation": "A generic recipe may contain the ingredient.",
            "topic": "lifestyle_dietary",
            "preference_type": "explicit",
        }
        for i in range(n)
    ]


def test_prefeval_stated_preference_is_the_context_from_a_saved_datasets_folder(tmp_path):
    import datasets

    folder = tmp_path / "prefeval_explicit"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(prefeval_rows(21))}).save_to_disk(str(folder))
    dataset = load_dataset("prefeval")
    records = prompt_records(dataset, str(folder), "all")
    first = next(r for r in records if r["id"] == "prefeval-0001")
    assert first["prompt"] == "What should I cook tonight, version 0?"
    assert (
        first["context"] == "I am allergic to ingredient 0." and first["meta"]["topic"] == "lifestyle_dietary"
    )
    train = prompt_records(dataset, str(folder), "train")
    test = prompt_records(dataset, str(folder), "test")
    assert not {r["context"] for r in train} & {r["context"] for r in test} and len(train) + len(test) == 21


def test_prefeval_parquet_in_the_hub_layout(tmp_path):
    import datasets

    folder = tmp_path / "prefeval_explicit"
    datasets.Dataset.from_list(prefeval_rows(4)).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet")
    )
    assert len(load_prompts(f"prefeval:{folder}", split="all")) == 4


def test_a_missing_folder_or_a_file_is_one_line_naming_the_dataset(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^prism: \S+ not found \(give a local folder or a Hub id"):
        load_prompts(f"prism:{tmp_path / 'nowhere'}")
    (tmp_path / "f.jsonl").write_text("{}\n")
    monkeypatch.setenv("MIPO_PREFEVAL", str(tmp_path / "f.jsonl"))
    with pytest.raises(ConfigError, match="^prefeval: .* is a file; give the dataset's folder or a Hub id"):
        load_task("prefeval")


def test_a_local_copy_missing_a_table_names_the_dataset(prism_folder):
    (prism_folder / "survey.jsonl").unlink()
    with pytest.raises(MipoError, match=r"^prism: cannot read the local copy .*\(survey.jsonl\)"):
        prompt_records(load_dataset("prism"), str(prism_folder), "all")


def test_offline_hub_id_not_cached_is_one_line_that_names_the_dataset_and_the_fix(tmp_path):
    """What a user without network sees: exit code 2 and one line, no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": "src"}
    env.pop("MIPO_PRISM", None)
    out = tmp_path / "train.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "mipo", "eval", "--task", "prism", "--export-train", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(
        "mipo eval: error: prism: cannot load HannahRoseKirk/prism-alignment (survey.jsonl)"
    )
    assert "needs the network" in lines[0] and "MIPO_PRISM=FOLDER" in lines[0]
    assert not out.exists()


def load_dataset(name: str):
    from mipo.tasks.personal import community_alignment, multifaceted_bench, prefeval, prism

    modules = {
        "prism": prism,
        "community-alignment": community_alignment,
        "multifaceted-bench": multifaceted_bench,
        "prefeval": prefeval,
    }
    return modules[name].DATASET


def test_cli_exports_the_train_users_prompts(prism_folder, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("MIPO_PRISM", str(prism_folder))
    out = tmp_path / "prism-train.jsonl"
    code, stdout, _ = cli("eval", "--task", "prism", "--export-train", out)
    train = prompt_records(load_dataset("prism"), str(prism_folder), "train")
    assert code == 0 and stdout.strip() == f"wrote {len(train)} train prompt records to {out}"
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [r["id"] for r in train]


def test_a_column_the_schema_lacks_is_one_line_naming_dataset_file_and_column(prism_folder):
    rows = [{**conversation_row(0, 0), "user": "user0"}]
    rows[0].pop("user_id")
    write_jsonl(prism_folder / "conversations.jsonl", rows)
    with pytest.raises(
        MipoError, match=r"^prism: \S+ \(conversations.jsonl\) has no column user_id \(columns: "
    ):
        prompt_records(load_dataset("prism"), str(prism_folder), "all")


def test_mipo_pairs_on_prism_train_users_with_incomplete_negatives(prism_folder, tmp_path, tiny_model_dir):
    from mipo.pairs.build import run_pairs
    from mipo.pairs.config import PairsConfig

    out = tmp_path / "pairs.jsonl"
    config = PairsConfig(
        model=str(tiny_model_dir),
        prompts=f"prism:{prism_folder}",
        out=str(out),
        strategy="incomplete",
        limit=3,
        max_new_tokens=4,
        workers=1,
        progress=False,
    )
    run_pairs(config)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    train = {r["id"]: r for r in prompt_records(load_dataset("prism"), str(prism_folder), "train")[:3]}
    assert rows and {row["id"] for row in rows} <= set(train)
    for row in rows:
        record = train[row["id"]]
        assert row["prompt"] == [
            {"role": "system", "content": record["context"]},
            {"role": "user", "content": record["prompt"]},
        ]
        assert row["negative_prompt"] == [
            {"role": "user", "content": record["prompt"]}
        ]  # the context dropped


def test_the_local_copy_may_follow_the_name_after_a_colon(prism_folder):
    from mipo.tasks import task_list_help

    by_argument = load_task(f"prism:{prism_folder}", limit=3)
    assert [item.id for item in by_argument.items] and all(item.context for item in by_argument.items)
    assert "prism[:SOURCE]" in task_list_help()
