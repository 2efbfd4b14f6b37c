"""``mipo eval --task judge:SOURCE`` and ``judge-check`` end to end: the tiny model against a second model,
judged by a local model and by one served over real HTTP (``tests/openai_server.py``)."""

from __future__ import annotations

import json

import pytest

from judge_models import bigram_judge_fixture  # noqa: F401  (the fixture bigram_judge_dir)
from mipo.evaluation.judges import summary_line

FAST = ["--limit", "3", "--max-new-tokens", "6", "--no-progress", "--n-bootstrap", "200"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test gets its own $MIPO_CACHE: verdicts cached by one test never serve another."""
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_judge_prefs_end_to_end_then_from_the_cache(cli, tiny_model_dir, bigram_judge_dir, tmp_path):
    # the model: the tiny random model; the baseline: the bigram model, which answers "[[A]]" to everything
    # and so follows every "all caps" preference the model's random words do not: the checkers tell all
    # three pairs apart, and the judge-check has pairs to judge
    out = tmp_path / "eval"
    args = ["eval", "--task", "judge:prefs", "--judge", tiny_model_dir, "--model", tiny_model_dir]
    args += ["--baseline", bigram_judge_dir, "--preference-types", "all_caps", "--out", out, *FAST]
    code, stdout, err = cli(*args)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    entry = results["tasks"]["judge:prefs"]
    judge = entry["judge"]
    assert entry["kind"] == "judge" and entry["metric"] == "fraction of stated preferences followed"
    assert judge["judge"] == str(tiny_model_dir) and judge["template"] == "personalization"
    assert judge["pairs"] == 3 and judge["verdicts"] == 6 and judge["judge_calls"] == 6
    assert judge["wins"] + judge["losses"] + judge["ties"] + judge["unparseable"] == 3
    assert set(judge["win_rate"]) >= {"mean", "ci", "n"} and set(judge["lc_win_rate"]) >= {"mean", "ci"}
    assert 0 <= judge["sign_test_p"] <= 1
    assert judge["mean_words"]["baseline"] == 1.0  # "[[A]]"
    # per-example rows: both replies (those the models wrote), both verdicts
    rows = _rows(out / judge["examples"])
    model_rows = _rows(out / entry["examples"]["model"])
    assert [r["model"] for r in rows] == [r["response"] for r in model_rows]
    assert [r["baseline"] for r in rows] == ["[[A]]"] * 3
    assert all(r["verdict_model_as_a"] in "ABC" and r["verdict_model_as_b"] in "ABC" for r in rows)
    assert all(r["context"] and r["prompt"] for r in rows)
    # prefs items: the judge-check ran on the same replies, its verdicts all from the win rate's cache
    check = entry["judge_check"]
    assert (check["pairs_given"], check["pairs"], check["judge_calls"]) == (3, 3, 0)
    assert check["note"].startswith("agreement with the checkers") and check["agreement"]["n"] == 3
    assert entry["model"]["mean"] == 0.0 and entry["baseline"]["mean"] == 1.0  # the table row: prefs' score
    # the check's rows: the reply the checkers prefer (the baseline's) in the model's place
    check_rows = _rows(out / check["examples"])
    assert [r["checker_scores"] for r in check_rows] == [{"preferred": 1.0, "other": 0.0}] * 3
    # the table: the summary line with the judge-check beside it
    assert summary_line(judge) in stdout
    assert f"judge-check: {check['note']}" in stdout
    # a second run asks the judge nothing: every verdict comes from the cache
    code, stdout, err = cli(*args, "--overwrite")
    assert code == 0, err
    again = json.loads((out / "results.json").read_text())["tasks"]["judge:prefs"]["judge"]
    assert again["judge_calls"] == 0
    assert {k: again[k] for k in ("wins", "losses", "ties", "win_rate")} == {
        k: judge[k] for k in ("wins", "losses", "ties", "win_rate")
    }
    # the report shows the win rate with the judge-check beside it
    import shutil

    from mipo.report.writer import build_report

    shutil.copytree(out, tmp_path / "run" / "eval" / "judge-prefs")
    report = build_report(tmp_path / "run").read_text()
    assert "## LLM judge (judge:prefs)" in report
    assert summary_line(again) in report and f"judge-check: {check['note']}" in report


@pytest.mark.parametrize(
    ("task", "baseline", "message"),
    [
        ("judge:prefs", [], "task judge:prefs: a pairwise judge needs two models; pass --baseline"),
        ("prefs,judge-check", [], "task judge-check: a pairwise judge needs two models"),
        ("judge:no-such-file.jsonl", ["--baseline", "x"], "not a task name"),
        ("judge:pmi", ["--baseline", "x"], "choose another source"),
        (
            "judge:prefs",
            ["--baseline", "x", "--judge-template", "nope.txt"],
            "judge template 'nope.txt': not a",
        ),
        (
            "judge:prefs",
            ["--baseline", "x", "--judge-url", "http://127.0.0.1:9/v1", "--judge-key-env", "MIPO_UNSET_KEY"],
            "--judge-key-env MIPO_UNSET_KEY: the environment variable MIPO_UNSET_KEY is not set",
        ),
    ],
)
def test_judge_task_errors_are_one_line(cli, tiny_model_dir, tmp_path, task, baseline, message):
    code, _, err = cli("eval", "--task", task, "--model", tiny_model_dir, *baseline, "--out", tmp_path / "o")
    errors = [line for line in err.splitlines() if line.startswith("mipo eval: error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_prompt_file_source_with_judge_check_beside_it(cli, tiny_model_dir, bigram_judge_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    records = [
        {"id": "a", "prompt": "How do I boil an egg?", "context": "I am a chef."},
        {"id": "b", "prompt": "Name a prime number."},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "eval"
    args = ["eval", "--task", f"judge:{prompts},judge-check", "--judge", bigram_judge_dir]
    code, stdout, err = cli(
        *args, "--model", tiny_model_dir, "--baseline", bigram_judge_dir, "--out", out, *FAST
    )
    assert code == 0, err
    tasks = json.loads((out / "results.json").read_text())["tasks"]
    entry = tasks[f"judge:{prompts}"]
    assert entry["n"] == 2 and entry["metric"].startswith("reply length in words")
    assert entry["baseline"]["mean"] == 1.0  # "[[A]]" is one word
    # the bigram judge always answers [[A]]: both orders disagree, every pair a tie
    assert (entry["judge"]["ties"], entry["judge"]["inconsistent"], entry["judge"]["win_rate"]["mean"]) == (
        2,
        2,
        0.5,
    )
    rows = _rows(out / entry["judge"]["examples"])
    assert [r["context"] for r in rows] == ["I am a chef.", None]
    # no preferences to check in a prompt file: the judge-check task's agreement stands beside the win rate
    check = tasks["judge-check"]["judge_check"]
    assert entry["judge_check"] == {**check, "from": "judge-check"}
    assert f"judge-check (task judge-check): {check['note']}" in stdout
    assert "judge" not in tasks["judge-check"]


def test_endpoint_judge_through_the_cli(cli, tiny_model_dir, bigram_judge_dir, tmp_path):
    from openai_server import ChatServer

    server = ChatServer(bigram_judge_dir, served_name="bigram")
    url = server.start()
    out = tmp_path / "eval"
    args = [
        "eval",
        "--task",
        "judge:prefs",
        "--judge",
        "bigram",
        "--judge-url",
        url,
        "--judge-concurrency",
        "2",
    ]
    args += ["--model", tiny_model_dir, "--baseline", bigram_judge_dir, "--out", out, *FAST]
    try:
        code, stdout, err = cli(*args)
        assert code == 0, err
        judge = json.loads((out / "results.json").read_text())["tasks"]["judge:prefs"]["judge"]
        assert server.completions == 6 and judge["judge_calls"] == 6
        assert (judge["ties"], judge["inconsistent"], judge["unparseable"]) == (3, 3, 0)
        assert judge["judge"] == "bigram" and summary_line(judge) in stdout
        code, _, err = cli(*args, "--overwrite")
        assert code == 0 and server.completions == 6  # the rerun asked the server nothing
    finally:
        server.stop()
    # the server is gone: one line naming the URL, exit 2, the generated replies kept for --resume
    code, _, err = cli(*args, "--overwrite", "--no-judge-cache", "--judge-retries", "0")
    errors = [line for line in err.splitlines() if line.startswith("mipo eval: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0] == f"mipo eval: error: judge endpoint {url} failed after 1 tries: Connection error. " + (
        "(is the server running and reachable?)"
    )
    assert any((out / "partial").glob("*.jsonl*"))


def test_a_run_killed_while_judging_resumes_with_only_the_missing_verdicts(
    cli, tiny_model_dir, bigram_judge_dir, tmp_path, monkeypatch
):
    from mipo.evaluation.judges.local import LocalJudge

    forward = LocalJudge._by_logprobs
    batches = []

    def killed_on_the_second_batch(self, prompts):
        if len(batches) == 1:
            raise KeyboardInterrupt  # the run is killed here
        batches.append(prompts)
        return forward(self, prompts)

    monkeypatch.setattr(LocalJudge, "_by_logprobs", killed_on_the_second_batch)
    out = tmp_path / "eval"
    args = ["eval", "--task", "judge:prefs", "--judge", tiny_model_dir, "--judge-batch-size", "2"]
    args += ["--model", tiny_model_dir, "--baseline", bigram_judge_dir, "--out", out, *FAST]
    code, _, _ = cli(*args)
    assert code != 0 and not (out / "results.json").exists()
    monkeypatch.setattr(LocalJudge, "_by_logprobs", forward)
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    judge = json.loads((out / "results.json").read_text())["tasks"]["judge:prefs"]["judge"]
    assert judge["verdicts"] == 6 and judge["judge_calls"] == 4  # the first batch of 2 came from the cache
