"""``mipo sample``: one row per prompt with its responses, same engine, resumable."""

from __future__ import annotations

import json

import pytest

from mipo.core.errors import OutputExistsError
from mipo.core.files import fingerprint_path, write_fingerprint


def test_sample_writes_one_row_per_prompt(tmp_path, tiny_model_dir, cli):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}?", "context": "I like cats.", "answer": i}) + "\n"
            for i in range(3)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "s.jsonl"
    code, stdout, _ = cli(
        "sample",
        "--model",
        tiny_model_dir,
        "--prompts",
        prompts,
        "--out",
        out,
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--temperature",
        "1.0",
        "--no-progress",
    )
    assert code == 0 and "wrote 3 prompts' responses" in stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "2", "3"] and [r["answer"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert len(r["responses"]) == 2 and r["response"] == r["responses"][0]
        assert r["prompt"] == [
            {"role": "system", "content": "I like cats."},
            {"role": "user", "content": r["prompt"][1]["content"]},
        ]
        assert r["generation"]["max_new_tokens"] == 4
    code, _, err = cli("sample", "--model", tiny_model_dir, "--prompts", prompts, "--out", out)
    assert code == 2 and "already exists" in err


def test_sample_resume_skips_rows_already_written(tmp_path, tiny_model_dir):
    from mipo.sampling.replies import SampleConfig, sample

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"r{i}", "prompt": f"Q {i}?"}) + "\n" for i in range(3)), encoding="utf-8"
    )
    out = tmp_path / "s.jsonl"
    config = SampleConfig(
        model=str(tiny_model_dir),
        prompts=str(prompts),
        out=str(out),
        max_new_tokens=3,
        temperature=0.0,
        resume=True,
        progress=False,
    )
    (tmp_path / "s.jsonl.partial").write_text(
        json.dumps({"id": "r0", "response": "kept"}) + '\n{"id": "r1", "cut', encoding="utf-8"
    )
    write_fingerprint(fingerprint_path(out), config.fingerprint())  # as the interrupted run left it
    sample(config)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"] and rows[0]["response"] == "kept"
    with pytest.raises(OutputExistsError):
        sample(SampleConfig(model=str(tiny_model_dir), prompts=str(prompts), out=str(out)))
