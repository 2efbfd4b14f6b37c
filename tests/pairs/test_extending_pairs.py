"""The worked examples of docs/extending/ run as written: a strategy and a backend registered from outside
the package, then used through the CLI by name."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs" / "extending"


def load_example(doc: str, tmp_path: Path, monkeypatch) -> None:
    """Write the doc's ```python block to a module outside mipo and import it, as a user would."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    name = code.splitlines()[0].removeprefix("# ").removesuffix(".py")
    (tmp_path / f"{name}.py").write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    __import__(name)


@pytest.fixture()
def prompts(tmp_path) -> Path:
    path = tmp_path / "p.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"How do I plant {i} tulip bulbs in spring?"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_strategy_from_outside_runs_through_mipo_pairs(tmp_path, tiny_model_dir, prompts, cli, monkeypatch):
    from mipo.pairs.strategies import STRATEGIES

    load_example("strategies.md", tmp_path, monkeypatch)
    try:
        out = tmp_path / "pairs.jsonl"
        code, stdout, err = cli(
            "pairs", "--model", tiny_model_dir, "--prompts", prompts, "--out", out,
            "--strategy", "shuffled-words", "--max-new-tokens", "8", "--no-progress",
        )  # fmt: skip
        assert code == 0, err
        assert "wrote 4 pairs from 4 prompts" in stdout
        for row in rows(out):
            question, negative = row["prompt"][-1]["content"], row["negative_prompt"][-1]["content"]
            assert row["strategy"] == "shuffled-words" and negative != question
            assert sorted(negative.split()) == sorted(question.split())
        one_word = tmp_path / "one.jsonl"
        one_word.write_text('{"prompt": "Hi?"}\n{"prompt": "Ho?"}\n', encoding="utf-8")
        code, _, err = cli(
            "pairs", "--model", tiny_model_dir, "--prompts", one_word, "--out", tmp_path / "o.jsonl",
            "--strategy", "shuffled-words",
        )  # fmt: skip
        assert code == 2 and f"{one_word}:1: field 'prompt': a question of one word cannot be shuffled" in err
    finally:
        STRATEGIES.unregister("shuffled-words")


def test_a_backend_from_outside_runs_through_pairs_and_sample(tmp_path, prompts, cli, monkeypatch):
    from mipo.engine.backends import BACKENDS

    load_example("backends.md", tmp_path, monkeypatch)
    try:
        out = tmp_path / "pairs.jsonl"
        code, stdout, err = cli(
            "pairs", "--model", "toy/no-model", "--backend", "echo", "--prompts", prompts, "--out", out,
            "--no-progress",
        )  # fmt: skip
        assert code == 0, err
        assert "wrote 4 pairs from 4 prompts" in stdout
        for row in rows(out):
            assert row["chosen"][0]["content"] == "You asked: " + row["prompt"][-1]["content"]
            assert row["rejected"][0]["content"] == "You asked: " + row["negative_prompt"][-1]["content"]
            assert row["generation"]["backend"] == "echo"
        code, stdout, err = cli(
            "sample", "--model", "toy/no-model", "--backend", "echo", "--prompts", prompts,
            "--out", tmp_path / "s.jsonl", "--samples", "2", "--no-progress",
        )  # fmt: skip
        assert code == 0, err
        assert [r["responses"] for r in rows(tmp_path / "s.jsonl")][0] == [
            "You asked: " + "How do I plant 0 tulip bulbs in spring?"
        ] * 2
        # its loader takes no dtype: auto is its own choice, any other one is refused
        code, _, err = cli(
            "sample", "--model", "toy/no-model", "--backend", "echo", "--prompts", prompts,
            "--out", tmp_path / "b.jsonl", "--dtype", "bfloat16", "--no-progress",
        )  # fmt: skip
        assert code == 2 and "--dtype bfloat16: backend 'echo' takes no dtype" in err
    finally:
        BACKENDS.unregister("echo")


def test_a_typo_in_strategy_or_backend_lists_the_known_names(tmp_path, prompts, capsys):
    from mipo.cli import main

    for flag, typo, known in (("--strategy", "randon", "'random'"), ("--backend", "hff", "'vllm'")):
        with pytest.raises(SystemExit) as exit_info:
            main(["pairs", "--prompts", str(prompts), "--out", str(tmp_path / "o.jsonl"), flag, typo])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"invalid choice: '{typo}'" in err and known in err
