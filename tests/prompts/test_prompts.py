"""Prompt records: every input format, the field mapping, and one-line errors naming file, line and field."""

from __future__ import annotations

import json

import pytest

from mipo.core.errors import InputError, MipoError
from mipo.prompts.records import PromptRecord, load_prompts, to_conversation


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"prompt": "What is 2+2?", "context": "About me: always answer in lowercase.", "answer": 4},
    {"id": "b", "prompt": [{"role": "user", "content": "Name a color."}], "task": "colors"},
]


def test_jsonl_fields_ids_and_meta(tmp_path):
    records = load_prompts(write_jsonl(tmp_path / "p.jsonl", ROWS))
    assert [r.id for r in records] == ["1", "b"]  # the line number when there is no id
    assert records[0].context == "About me: always answer in lowercase." and records[0].answer == 4
    assert records[1].prompt == [{"role": "user", "content": "Name a color."}]
    assert records[1].meta == {"task": "colors"} and records[1].question == "Name a color."


def test_csv_parquet_and_datasets_folder_give_the_same_records(tmp_path):
    import datasets

    rows = [
        {"id": "x", "q": "Hi there?", "persona": "I like cats."},
        {"id": "y", "q": "Why?", "persona": None},
    ]
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("id,q,persona\nx,Hi there?,I like cats.\ny,Why?,\n", encoding="utf-8")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for source in (csv_path, tmp_path / "p.parquet", tmp_path / "saved"):
        records = load_prompts(source, prompt_field="q", context_field="persona")
        assert [(r.id, r.prompt, r.context) for r in records] == [
            ("x", "Hi there?", "I like cats."),
            ("y", "Why?", None),
        ], source


@pytest.mark.parametrize(
    "content, line, field, words",
    [
        ('{"prompt": "ok"}\n{"prompt": "broken\n', 2, None, "malformed JSON"),
        ('{"prompt": "ok"}\n{"context": "x"}\n', 2, "prompt", "missing or empty prompt"),
        ('{"prompt": "  "}\n', 1, "prompt", "missing or empty prompt"),
        ('{"prompt": 5}\n', 1, "prompt", "expected a string or a list"),
        ('{"prompt": "a", "context": 3}\n', 1, "context", "expected a string"),
        ('{"prompt": [{"role": "user"}]}\n', 1, "prompt", "message 1"),
        ('{"prompt": "a", "id": 1}\n{"prompt": "b", "id": 1}\n', 2, "id", "repeats line 1"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, content, line, field, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_prompts(path)
    assert e.value.line == line and e.value.field == field and words in str(e.value)
    assert str(e.value).startswith(f"{path}:{line}:")


def test_non_utf8_and_missing_file_and_offline_hub_are_one_line_errors(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_prompts(path)
    with pytest.raises(MipoError, match="file not found"):
        load_prompts(tmp_path / "nope.jsonl")
    with pytest.raises(MipoError, match="cannot load 'nobody-xyz/no-such-dataset'") as e:
        load_prompts("nobody-xyz/no-such-dataset")
    assert "\n" not in str(e.value)


def test_to_conversation_context_modes():
    record = PromptRecord(id="1", prompt="What is 2+2?", context="I like cats.", system="Be brief.")
    assert to_conversation(record) == [
        {"role": "system", "content": "Be brief.\n\nI like cats."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert to_conversation(record, context_mode="prefix", with_system=False) == [
        {"role": "user", "content": "I like cats.\n\nWhat is 2+2?"}
    ]
    assert to_conversation(record, with_context=False, with_system=False) == [
        {"role": "user", "content": "What is 2+2?"}
    ]
    chat = PromptRecord(
        id="2",
        prompt=[{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        context="C",
    )
    assert to_conversation(chat)[0] == {"role": "system", "content": "S\n\nC"}
    assert to_conversation(chat, with_system=False, with_context=False) == [{"role": "user", "content": "Q"}]


def test_a_utf8_byte_order_mark_is_dropped_from_jsonl_csv_and_json(tmp_path):
    from mipo.prompts.records import load_prompts

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('\ufeff{"id": "a", "prompt": "Hi?"}\n{"id": "b", "prompt": "Ho?"}\n', encoding="utf-8")
    assert [r.id for r in load_prompts(jsonl)] == ["a", "b"]
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("\ufeffid,prompt\nx1,Hi?\nx2,Ho?\n", encoding="utf-8")
    records = load_prompts(csv_file)
    assert [r.id for r in records] == ["x1", "x2"] and records[0].meta == {}  # the id column is the id
    array = tmp_path / "p.json"
    array.write_text('\ufeff[{"id": "j", "prompt": "Hi?"}]', encoding="utf-8")
    assert [r.id for r in load_prompts(array)] == ["j"]
