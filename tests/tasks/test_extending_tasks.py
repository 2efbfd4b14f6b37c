"""docs/extending/tasks.md's worked example, run as written: a task registered from outside mipo, end to end
through the CLI on the tiny model."""

import json
import re
from pathlib import Path

import pytest

from mipo.tasks import TASKS, load_task

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending" / "tasks.md"


@pytest.fixture()
def capitals():
    """The module of the worked example, executed from the doc's first Python block; unregistered after."""
    block = re.search(r"```python\n(# my_tasks\.py\n.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    namespace: dict = {"__name__": "my_tasks"}
    exec(compile(block, str(DOC), "exec"), namespace)
    yield namespace
    TASKS.unregister("capitals")


def test_the_documented_task_registers_and_scores(capitals):
    assert "capitals" in TASKS.names()
    task = load_task("capitals", limit=3)
    assert [i.id for i in task.items] == ["france", "japan", "kenya"]
    assert task.items[0].messages() == [
        {"role": "user", "content": "What is the capital of France? Answer in one word."}
    ]
    assert task.score(task.items[0], "It is Paris.")["score"] == 1.0
    assert task.score(task.items[0], "It is Lyon.") == {"score": 0.0, "extracted": None, "verdict": False}


def test_the_documented_task_runs_through_the_cli(capitals, cli, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    code, stdout, err = cli(
        "eval",
        "--task",
        "capitals,gsm8k",
        "--model",
        tiny_model_dir,
        "--baseline",
        tiny_model_dir,
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--n-bootstrap",
        "200",
        "--no-progress",
        "--out",
        out,
    )
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"]["capitals"]
    assert entry["n"] == 2 and entry["metric"] == "names the capital" and entry["source"] == "my_tasks.py"
    assert entry["difference"]["mean"] == 0.0  # the same model as its own baseline
    rows = [json.loads(line) for line in (out / entry["examples"]["model"]).read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["Paris", "Tokyo"]
    assert stdout.splitlines()[2].startswith("capitals")


def test_a_name_that_takes_no_argument_is_refused_with_one(capitals, cli, tiny_model_dir, tmp_path):
    code, _, err = cli("eval", "--task", "capitals:x", "--model", tiny_model_dir, "--out", tmp_path / "o")
    assert code == 2 and "unknown task 'capitals:x': choose from" in err and "capitals" in err
