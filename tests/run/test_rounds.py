"""``rounds: N`` in ``mipo run``: round r samples its pairs from round r-1's model and trains from it."""

from __future__ import annotations

import json

import yaml


def write_config(tmp_path, tiny_model_dir, rounds) -> tuple:
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"id": f"q{i}", "prompt": f"Question {i}: name a colour.", "context": f"I am user {i}; I like lists."}
        for i in range(4)
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    config = {
        "run_dir": str(run),
        "model": str(tiny_model_dir),
        "rounds": rounds,
        "prompts": {"file": str(prompts)},
        "pairs": {
            "strategy": "incomplete",
            "max_new_tokens": 6,
            "temperature": 1.0,
            "top_p": 1.0,
            "progress": False,
        },
        "train": {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 64},
        "eval": [{"task": "prefs", "limit": 2, "max_new_tokens": 4, "n_bootstrap": 100, "progress": False}],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, run


def state(run, folder) -> dict:
    return json.loads((run / folder / "stage.json").read_text())


def test_round_two_samples_and_trains_from_round_one_and_a_rerun_skips_finished_rounds(
    tmp_path, tiny_model_dir, cli, caplog, monkeypatch
):
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))
    path, run = write_config(tmp_path, tiny_model_dir, 2)
    code, _, err = cli("run", path)
    assert code == 0, err
    round_one_model = str(run / "train" / "model" / "merged")
    assert (run / "train" / "model" / "merged" / "config.json").is_file()
    pairs_two, train_two = state(run, "pairs-r2"), state(run, "train-r2")
    # round 2's pairs: sampled by round 1's model, keyed on round 1's training
    assert pairs_two["finished"] and pairs_two["settings"]["model"] == round_one_model
    assert state(run, "train")["key"] in pairs_two["upstream"]
    rows = [json.loads(line) for line in (run / "pairs-r2" / "pairs.jsonl").read_text().splitlines()]
    assert rows and {r["model"] for r in rows} == {round_one_model}
    # round 2 trains from round 1's model (DPO's reference is the model it starts from)
    assert train_two["settings"]["model"] == round_one_model and pairs_two["key"] in train_two["upstream"]
    assert state(run, "pairs")["settings"]["model"] == str(tiny_model_dir)
    # the evaluation reads the last round's model
    results = json.loads((run / "eval" / "prefs" / "results.json").read_text())
    assert results["models"]["model"]["source"] == str(run / "train-r2" / "model")
    assert state(run, "eval/prefs")["upstream"] == [train_two["key"]]

    caplog.clear()
    with caplog.at_level("INFO", logger="mipo.run.pipeline"):
        assert cli("run", path)[0] == 0
    assert caplog.text.count(": skipped") == 7  # prompts, 2 x (pairs, train), eval, report

    # one more round: the two finished rounds are kept, round 3 starts from round 2's model
    caplog.clear()
    with caplog.at_level("INFO", logger="mipo.run.pipeline"):
        assert cli("run", path, "rounds=3")[0] == 0
    for name in ("prompts", "pairs", "train", "pairs-r2", "train-r2"):
        assert f"] {name}: skipped" in caplog.text, name
    assert state(run, "pairs-r3")["settings"]["model"] == str(run / "train-r2" / "model" / "merged")


def test_rounds_below_one_is_a_one_line_error_naming_the_key(tmp_path, tiny_model_dir, cli):
    path, run = write_config(tmp_path, tiny_model_dir, 0)
    code, _, err = cli("run", path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'rounds'" in err, err
    assert not run.exists()
