"""``mipo eval`` and ``mipo pmi`` end to end on the tiny model: files written, numbers consistent, errors."""

import json

import pytest

from mipo.core.errors import MipoError
from mipo.evaluation.runner import evaluate
from mipo.evaluation.settings import EvalConfig

FAST = ["--limit", "3", "--max-new-tokens", "6", "--no-progress", "--n-bootstrap", "500"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test gets its own $MIPO_CACHE, so a baseline cached by one test never serves another."""
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))


def _read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_task_end_to_end_with_a_baseline(cli, tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    mc_file = tmp_path / "mc.jsonl"
    mc_file.write_text(json.dumps({"question": "Sky?", "choices": ["red", "blue"], "answer": "B"}) + "\n")
    tasks = f"prefs,gsm8k,arc-easy,arc-challenge,mmlu,pmi,file:{mc_file}"
    code, stdout, err = cli(
        "eval",
        "--task",
        tasks,
        "--model",
        tiny_model_dir,
        "--baseline",
        tiny_model_dir,
        "--seeds",
        "1",
        "--k",
        "2",
        "--out",
        out,
        *FAST,
    )
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {
        "prefs",
        "gsm8k",
        "arc-easy",
        "arc-challenge",
        "mmlu",
        "pmi",
        f"file:{mc_file}",
    }
    assert results["settings"]["temperature"] == 0.1 and results["settings"]["top_p"] == 0.9
    assert results["models"]["model"]["source"] == str(tiny_model_dir)
    for name, entry in results["tasks"].items():
        assert entry["n"] == (1 if name.startswith("file:") else 3)
        for role in ("model", "baseline"):
            summary = entry[role]
            assert summary["ci"][0] <= summary["mean"] <= summary["ci"][1]
            assert set(summary["per_seed"]) == {"1"}
            rows = _read_rows(out / entry["examples"][role])
            assert len(rows) == entry["n"]
            assert {"id", "seed", "prompt", "response", "score", "extracted", "verdict"} <= set(rows[0])
            mean_of_rows = sum(r["score"] for r in rows) / len(rows)
            assert summary["mean"] == pytest.approx(mean_of_rows)
        # The same model as its own baseline, on the same seeds: identical samples, zero difference.
        assert entry["difference"]["mean"] == pytest.approx(0.0, abs=1e-9)
        assert entry["difference"]["p_value"] == 1.0
    prefs = results["tasks"]["prefs"]
    assert prefs["model"]["per_preference"] and prefs["baseline"]["per_preference"]
    rows = _read_rows(out / prefs["examples"]["model"])
    assert rows[0]["prompt"][0]["role"] == "system" and rows[0]["prompt"][0]["content"].startswith(
        "About me:"
    )
    assert {"type", "text", "followed"} <= set(rows[0]["preferences"][0])
    pmi = results["tasks"]["pmi"]
    assert len(pmi["model"]["values"]) == 3 and sum(pmi["model"]["histogram"]["counts"]) == 3
    pmi_rows = _read_rows(out / pmi["examples"]["model"])
    assert all(r["pmi"] == pytest.approx(r["logp"] - r["logp_marginal"]) for r in pmi_rows)
    gsm_rows = _read_rows(out / results["tasks"]["gsm8k"]["examples"]["model"])
    assert all("answer" in r for r in gsm_rows)
    assert "prefs" in stdout and "difference" in stdout and "results:" in stdout


def test_seeds_repeat_the_sampling(cli, tiny_model_dir, tmp_path):
    out = tmp_path / "seeds"
    code, _, err = cli(
        "eval", "--task", "gsm8k", "--model", tiny_model_dir, "--seeds", "1,2", "--out", out, *FAST
    )
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"]["gsm8k"]
    assert set(entry["model"]["per_seed"]) == {"1", "2"}
    rows = _read_rows(out / entry["examples"]["model"])
    assert [r["seed"] for r in rows] == [1, 1, 1, 2, 2, 2]  # one row per item and seed
    item_means = [(rows[i]["score"] + rows[i + 3]["score"]) / 2 for i in range(3)]
    assert entry["model"]["mean"] == pytest.approx(sum(item_means) / 3)


def test_pmi_defaults_to_the_reference_models_own_responses(tiny_model_dir, tmp_path):
    # With no baseline, pmi compares the model's responses with the reference's own: here the same model
    # is given as reference and model folder under another path, so both are generated and scored.
    import shutil

    reference = tmp_path / "ref"
    shutil.copytree(tiny_model_dir, reference)
    config = EvalConfig(
        task="pmi",
        model=str(tiny_model_dir),
        reference=str(reference),
        limit=5,
        k=2,
        max_new_tokens=6,
        out=str(tmp_path / "o"),
        progress=False,
        n_bootstrap=200,
    )
    results = json.loads(evaluate(config).read_text())
    entry = results["tasks"]["pmi"]
    assert entry["models"] == {
        "model": str(tiny_model_dir),
        "baseline": str(reference),
        "reference": str(reference),
    }
    assert entry["difference"]["mean"] == pytest.approx(0.0, abs=1e-4)  # same weights, same seed


def test_mc_loglik_and_greedy(cli, tiny_model_dir, tmp_path):
    out = tmp_path / "ll"
    code, _, err = cli(
        "eval",
        "--task",
        "arc-easy",
        "--mc-mode",
        "loglik",
        "--greedy",
        "--model",
        tiny_model_dir,
        "--out",
        out,
        *FAST,
    )
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"]["arc-easy"]
    assert entry["mc_mode"] == "loglik"
    rows = _read_rows(out / entry["examples"]["model"])
    assert all(len(r["choice_logprobs"]) >= 3 and r["extracted"] in "ABCDE" for r in rows)


def test_pmi_command_on_a_pairs_file(cli, tiny_model_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as f:
        for i, (q, a, b) in enumerate(
            [
                ("Capital of France?", "Paris.", "Blue."),
                ("Color of sky?", "Blue.", "Paris."),
                ("2+2?", "4.", "Paris."),
                ("Name a fruit.", "Apple.", "4."),
            ]
        ):
            f.write(
                json.dumps(
                    {
                        "id": i,
                        "prompt": [{"role": "user", "content": q}],
                        "chosen": [{"role": "assistant", "content": a}],
                        "rejected": [{"role": "assistant", "content": b}],
                    }
                )
                + "\n"
            )
    out = tmp_path / "pmi"
    code, stdout, err = cli(
        "pmi",
        "--model",
        tiny_model_dir,
        "--pairs",
        pairs,
        "--k",
        "2",
        "--score-pairs",
        "--out",
        out,
        "--max-new-tokens",
        "6",
        "--no-progress",
        "--n-bootstrap",
        "200",
    )
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"]["pmi"]
    assert entry["n"] == 4 and entry["source"] == str(pairs)
    assert set(entry["pairs"]) == {"chosen", "rejected", "difference"}
    assert "chosen" in stdout


def test_export_train_prompts(cli, tmp_path):
    path = tmp_path / "train.jsonl"
    code, stdout, err = cli(
        "eval", "--task", "prefs", "--export-train", path, "--limit", "10", "--profiles-per-question", "2"
    )
    assert code == 0, err
    rows = _read_rows(path)
    assert len(rows) == 20 and "wrote 20 train prompt records" in stdout
    code, stdout, err = cli(
        "eval", "--task", "prefs", "--export-train", tmp_path / "x.jsonl", "--limit", "3", "--every-profile"
    )
    assert code == 0 and "wrote 9 train prompt records" in stdout, err
    code, _, err = cli("eval", "--task", "gsm8k", "--export-train", tmp_path / "g.jsonl", "--limit", "5")
    assert code == 0, err
    rows = _read_rows(tmp_path / "g.jsonl")
    assert len(rows) == 5 and "answer" not in rows[0] and rows[0]["prompt"].endswith("'The answer is N.'")
    gsm8k_test = {
        i.meta["question"] for i in __import__("mipo.tasks", fromlist=["x"]).load_task("gsm8k").items
    }
    assert not {r["meta"]["question"] for r in rows} & gsm8k_test


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--task", "file:/no/such.jsonl"], "/no/such.jsonl: file not found"),
        (["--task", "pmi", "--prompts", "/no/such.jsonl"], "/no/such.jsonl: file not found"),
        (["--seeds", "1,x"], "seeds must be integers"),
        (["--preference-types", "lowercase,shouting"], "preference_types: unknown shouting"),
        (["--task", "arc-easy", "--export-train", "x.jsonl"], "--export-train works with one task"),
        (["--every-profile"], "--every-profile apply only with --export-train"),
        (
            ["--task", "gsm8k", "--export-train", "x.jsonl", "--every-profile"],
            "every_profile: 'gsm8k' draws no",
        ),
        (["--task", "pmi", "--limit", "3", "--k", "8"], "pmi: k=8 other prompts needed but only 3"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(cli, tiny_model_dir, tmp_path, args, message):
    code, _, err = cli("eval", "--model", tiny_model_dir, "--out", tmp_path / "o", "--no-progress", *args)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("mipo eval: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_bad_item_file_names_line_and_field(cli, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"question": "1+1", "answer": 2})
        + "\n"
        + json.dumps({"question": "Q", "answer": "?"})
        + "\n"
    )
    code, _, err = cli("eval", "--task", f"file:{bad}", "--model", tiny_model_dir, "--out", tmp_path / "o")
    assert code == 2 and f"{bad}:2: field 'answer'" in err


def test_finished_results_are_not_overwritten(cli, tiny_model_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").write_text("{}")
    code, _, err = cli("eval", "--task", "gsm8k", "--model", tiny_model_dir, "--out", out, *FAST)
    assert code == 2 and "--overwrite" in err
    assert (out / "results.json").read_text() == "{}"


def test_baseline_outputs_are_cached_and_reused(tiny_model_dir, tmp_path, monkeypatch):
    # Two models compared with one baseline: the second evaluation takes the baseline's scored rows from
    # $MIPO_CACHE/eval without loading it; the numbers are the same as computing them again.
    import shutil

    import mipo.evaluation.answers as answers

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    common = dict(
        task="prefs,pmi",
        baseline=str(other),
        limit=4,
        k=2,
        max_new_tokens=5,
        seeds=[3],
        progress=False,
        n_bootstrap=200,
    )
    first = json.loads(
        evaluate(EvalConfig(model=str(tiny_model_dir), out=str(tmp_path / "a"), **common)).read_text()
    )
    assert first["baseline_from_cache"] == []
    assert len(list((tmp_path / "cache" / "eval").glob("*.json"))) == 2  # one per task
    for kind in ("no-context", "wrong-context"):  # prefs' replies without, and with another user's context
        assert len(list((tmp_path / "cache" / "eval" / kind).glob("*.json"))) == 1

    loaded = []
    real_get = answers.ModelSlot.get
    monkeypatch.setattr(
        answers.ModelSlot, "get", lambda self, name: loaded.append(name) or real_get(self, name)
    )
    second = json.loads(
        evaluate(EvalConfig(model=str(tiny_model_dir), out=str(tmp_path / "b"), **common)).read_text()
    )
    assert second["baseline_from_cache"] == ["pmi", "prefs"]
    assert str(other) in loaded  # pmi's reference is the baseline: it still scores the model's responses
    for task in ("prefs", "pmi"):
        assert second["tasks"][task]["baseline"]["mean"] == pytest.approx(
            first["tasks"][task]["baseline"]["mean"]
        )
        assert second["tasks"][task]["difference"]["mean"] == pytest.approx(
            first["tasks"][task]["difference"]["mean"]
        )
    effects = [run["tasks"]["prefs"]["context_effect"] for run in (first, second)]
    assert effects[1]["content_effect"] == effects[0]["content_effect"]
    assert effects[1]["scores"]["baseline_wrong"] == effects[0]["scores"]["baseline_wrong"]

    # prefs alone: the baseline is never loaded (but for the distillation gap's teacher, which needs its
    # weights); a changed setting misses the cache; so does cache_baseline=False
    loaded.clear()
    prefs_alone = {**common, "task": "prefs", "distillation_gap": False}
    evaluate(EvalConfig(model=str(tiny_model_dir), out=str(tmp_path / "c"), **prefs_alone))
    assert loaded == [str(tiny_model_dir)]
    changed = {**common, "task": "prefs", "max_new_tokens": 4}
    third = json.loads(
        evaluate(EvalConfig(model=str(tiny_model_dir), out=str(tmp_path / "d"), **changed)).read_text()
    )
    assert third["baseline_from_cache"] == []
    off = {**common, "task": "prefs", "cache_baseline": False}
    fourth = json.loads(
        evaluate(EvalConfig(model=str(tiny_model_dir), out=str(tmp_path / "e"), **off)).read_text()
    )
    assert fourth["baseline_from_cache"] == []


def test_an_edited_prompts_file_misses_the_baseline_cache(tiny_model_dir, tmp_path):
    # Same ids, new text: the cached baseline rows belong to the old prompts and must not be reused.
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    prompts = tmp_path / "prompts.jsonl"
    texts = ["Name a fruit.", "Name a color.", "Name a city."]
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))
    common = dict(
        task="pmi", prompts=str(prompts), baseline=str(other), k=2, max_new_tokens=4, progress=False
    )
    first = json.loads(
        evaluate(EvalConfig(model=str(tiny_model_dir), out=str(tmp_path / "a"), **common)).read_text()
    )
    again = json.loads(
        evaluate(EvalConfig(model=str(tiny_model_dir), out=str(tmp_path / "b"), **common)).read_text()
    )
    assert (first["baseline_from_cache"], again["baseline_from_cache"]) == ([], ["pmi"])
    prompts.write_text(prompts.read_text().replace("Name a city.", "Name an animal."))
    edited = json.loads(
        evaluate(EvalConfig(model=str(tiny_model_dir), out=str(tmp_path / "c"), **common)).read_text()
    )
    assert edited["baseline_from_cache"] == []


def test_an_interrupted_evaluation_resumes_without_redoing_saved_batches(
    tiny_model_dir, tmp_path, monkeypatch
):
    import mipo.engine.generation as generation

    common = dict(
        task="prefs",
        model=str(tiny_model_dir),
        limit=5,
        batch_size=2,
        max_new_tokens=5,
        seeds=[4],
        progress=False,
        n_bootstrap=200,
    )
    whole = json.loads(evaluate(EvalConfig(out=str(tmp_path / "whole"), **common)).read_text())
    whole_rows = _read_rows(tmp_path / "whole" / "examples" / "prefs.model.jsonl")

    real, calls = generation.generate_responses, []

    def killed_after_two_batches(*args, **kwargs):
        calls.append(len(args[2]))  # the conversations of this batch
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_responses", killed_after_two_batches)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        evaluate(EvalConfig(out=str(out), **common))
    assert not (out / "results.json").exists() and len(list((out / "partial").glob("*.partial"))) == 1
    assert (out / "partial" / "fingerprint.json").is_file()  # what the saved batches belong to

    with pytest.raises(MipoError, match="holds an interrupted evaluation; pass --resume"):
        evaluate(EvalConfig(out=str(out), **common))

    monkeypatch.setattr(
        generation, "generate_responses", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k)
    )
    calls.clear()
    resumed = json.loads(evaluate(EvalConfig(out=str(out), resume=True, **common)).read_text())
    # batches 0 and 1 were read back; only the last one (1 item) ran, then the 3 batches without the
    # context (the context effect, on by default) and the 3 with another user's (the content effect)
    assert calls == [1, 2, 2, 1, 2, 2, 1]
    assert _read_rows(out / "examples" / "prefs.model.jsonl") == whole_rows
    assert resumed["tasks"]["prefs"]["model"]["mean"] == whole["tasks"]["prefs"]["model"]["mean"]
    assert not (out / "partial").exists()


def _interrupted_run(cli, tiny_model_dir, out, monkeypatch, *extra):
    """Start an evaluation and interrupt it after its first batch (as Ctrl-C would)."""
    import mipo.engine.generation as generation

    real, calls = generation.generate_responses, []

    def interrupted_after_one_batch(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_responses", interrupted_after_one_batch)
    args = ["eval", "--task", "gsm8k", "--model", tiny_model_dir, "--out", out, "--batch-size", "2"]
    code, _, err = cli(*args, "--seeds", "4", *FAST, *extra)
    assert code == 130, err
    monkeypatch.setattr(generation, "generate_responses", real)
    return args


@pytest.mark.parametrize(
    "changed, named",
    [
        (["--seeds", "5"], "seeds: [4] -> [5]"),
        (["--seeds", "4", "--max-new-tokens", "7"], "max_new_tokens: 6 -> 7"),
    ],
)
def test_a_resume_of_another_job_is_refused_naming_what_differs(
    cli, tiny_model_dir, tmp_path, monkeypatch, changed, named
):
    out = tmp_path / "o"
    args = _interrupted_run(cli, tiny_model_dir, out, monkeypatch)
    saved = (out / "partial" / "gsm8k.model.seed4.jsonl.partial").read_text()
    code, _, err = cli(*args, *FAST, *changed, "--resume")
    errors = [line for line in err.splitlines() if line.startswith("mipo eval: error:")]
    assert code == 2 and len(errors) == 1 and "cannot resume" in errors[0] and named in errors[0]
    assert (out / "partial" / "gsm8k.model.seed4.jsonl.partial").read_text() == saved  # nothing lost
    code, _, err = cli(*args, "--seeds", "4", *FAST, "--resume")  # the same job resumes
    assert code == 0, err
    assert not (out / "partial").exists()
    code, _, err = cli(*args, "--seeds", "4", *FAST, "--resume")
    assert code == 2 and "this evaluation is finished, there is nothing to resume" in err


def test_resume_with_overwrite_starts_another_job_again(cli, tiny_model_dir, tmp_path, monkeypatch):
    # mipo run passes both: a stage whose inputs changed (a retrained model) starts again instead of failing
    out = tmp_path / "o"
    args = _interrupted_run(cli, tiny_model_dir, out, monkeypatch)
    code, _, err = cli(*args, *FAST, "--seeds", "5", "--resume", "--overwrite")
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["settings"]["seeds"] == [5]


def test_an_output_folder_holding_an_input_is_refused_before_anything_is_written(
    cli, tiny_model_dir, tmp_path
):
    import shutil

    model = tmp_path / "runs" / "model"
    shutil.copytree(tiny_model_dir, model)
    before = sorted(p.name for p in model.iterdir())
    for out in (model, tmp_path / "runs"):
        code, _, err = cli("eval", "--task", "gsm8k", "--model", model, "--out", out, "--overwrite", *FAST)
        assert code == 2 and f"--out {out} holds an input (--model: {model})" in err
    assert sorted(p.name for p in model.iterdir()) == before
    items = tmp_path / "items" / "mine.jsonl"
    items.parent.mkdir()
    items.write_text(json.dumps({"question": "1+1?", "answer": 2}) + "\n")
    code, _, err = cli("eval", "--task", f"file:{items}", "--model", model, "--out", items.parent, *FAST)
    assert code == 2 and "holds an input (--task file:" in err and items.is_file()


def test_overwrite_never_deletes_files_mipo_did_not_write(cli, tiny_model_dir, tmp_path):
    out = tmp_path / "o"
    (out / "partial").mkdir(parents=True)
    (out / "partial" / "notes.txt").write_text("mine")
    (out / "thesis.tex").write_text("mine too")
    args = ["eval", "--task", "gsm8k", "--model", tiny_model_dir, "--out", out, *FAST]
    code, _, err = cli(*args)
    assert code == 2 and "holds an interrupted evaluation" in err
    code, _, err = cli(*args, "--overwrite")
    assert code == 0, err
    assert (out / "partial" / "notes.txt").read_text() == "mine"
    assert (out / "thesis.tex").read_text() == "mine too"
    assert sorted(p.name for p in (out / "partial").iterdir()) == ["notes.txt"]  # mipo's own files are gone


# --- the context effect -----------------------------------------------------------------------------

# Preference types a random tiny model follows now and then (short, no commas, lowercase), so the four
# arms of the context effect are not all zero.
EASY_TYPES = ["max_words", "no_commas", "lowercase", "single_paragraph"]


@pytest.fixture(scope="module")
def other_tiny_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model's architecture with other random weights: a baseline whose replies differ."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(tiny_model_dir).config)
    folder = tmp_path_factory.mktemp("other-tiny")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def _mean(values):
    return sum(values) / len(values)


def test_the_context_effect_is_measured_from_replies_without_the_context(
    cli, tiny_model_dir, other_tiny_model_dir, tmp_path
):
    out = tmp_path / "ce"
    args = ["eval", "--task", "prefs", "--model", tiny_model_dir, "--baseline", other_tiny_model_dir]
    args += ["--preference-types", ",".join(EASY_TYPES), "--seeds", "0,1", "--out", out, *FAST]
    code, stdout, err = cli(*args, "--limit", "6", "--max-new-tokens", "12")
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"]["prefs"]
    effect = entry["context_effect"]
    assert effect["examples"] == {
        "model": "examples/prefs.model.no-context.jsonl",
        "baseline": "examples/prefs.baseline.no-context.jsonl",
    }
    files = {}
    for role in ("model", "baseline"):
        files[role, "with"] = _read_rows(out / entry["examples"][role])
        files[role, "without"] = _read_rows(out / effect["examples"][role])
    for with_row, bare_row in zip(files["model", "with"], files["model", "without"]):
        # the same item, seed and stated preferences; only the user's context is gone from the prompt
        assert (bare_row["id"], bare_row["seed"]) == (with_row["id"], with_row["seed"])
        assert [p["text"] for p in bare_row["preferences"]] == [p["text"] for p in with_row["preferences"]]
        assert with_row["prompt"][0]["content"].startswith("About me:")
        assert [m["role"] for m in bare_row["prompt"]] == ["user"]
        assert bare_row["prompt"][-1] == with_row["prompt"][-1]
    # the numbers are those of the example files: per item, the mean over the two seeds
    item = {
        key: [_mean([r["score"] for r in rows if r["id"] == i]) for i in dict.fromkeys(r["id"] for r in rows)]
        for key, rows in files.items()
    }
    m_with, m_without = _mean(item["model", "with"]), _mean(item["model", "without"])
    b_with, b_without = _mean(item["baseline", "with"]), _mean(item["baseline", "without"])
    assert effect["scores"]["model_without"]["mean"] == pytest.approx(m_without)
    assert effect["generic_shift"]["mean"] == pytest.approx(m_without - b_without)
    assert effect["context_effect"]["mean"] == pytest.approx((m_with - m_without) - (b_with - b_without))
    assert effect["gain"]["mean"] == pytest.approx(entry["difference"]["mean"])
    assert effect["n"] == 6 and 0 <= effect["context_effect"]["p_value"] <= 1
    assert set(effect["per_preference"]) <= set(EASY_TYPES) and effect["per_preference"]
    assert f"verdict: {effect['verdict']}" in stdout
    assert "generic shift" in stdout and "context effect" in stdout

    # the wrong-context control: each item answered with another user's context, scored against its own
    wrong = effect["wrong_context"]
    assert wrong["examples"] == {
        "model": "examples/prefs.model.wrong-context.jsonl",
        "baseline": "examples/prefs.baseline.wrong-context.jsonl",
    }
    contexts = {r["id"]: r["prompt"][0]["content"] for r in files["model", "with"]}
    preferences = {r["id"]: r["preferences"] for r in files["model", "with"]}
    assert set(wrong["drawn"]) == set(contexts)
    for item_id, donor in wrong["drawn"].items():
        assert donor != item_id and preferences[donor] != preferences[item_id]
    for role in ("model", "baseline"):
        files[role, "wrong"] = _read_rows(out / wrong["examples"][role])
    for with_row, wrong_row in zip(files["model", "with"], files["model", "wrong"]):
        assert (wrong_row["id"], wrong_row["seed"]) == (with_row["id"], with_row["seed"])
        assert wrong_row["prompt"][0]["content"] == contexts[wrong["drawn"][with_row["id"]]]
        assert [p["text"] for p in wrong_row["preferences"]] == [p["text"] for p in with_row["preferences"]]
        assert wrong_row["prompt"][-1] == with_row["prompt"][-1]
    m_wrong = _mean([r["score"] for r in files["model", "wrong"]])
    b_wrong = _mean([r["score"] for r in files["baseline", "wrong"]])
    assert effect["scores"]["baseline_wrong"]["mean"] == pytest.approx(b_wrong)
    assert effect["content_effect"]["mean"] == pytest.approx((m_with - m_wrong) - (b_with - b_wrong))
    assert effect["n_wrong_context"] == 6 and "content effect" in stdout

    skipped = tmp_path / "skip"
    off = ["--no-context-effect", "--no-wrong-context", "--no-distillation-gap"]
    code, stdout, err = cli(*args[:-3], "--out", skipped, *FAST, *off)
    assert code == 0, err
    assert "context_effect" not in json.loads((skipped / "results.json").read_text())["tasks"]["prefs"]
    assert sorted(p.name for p in (skipped / "examples").iterdir()) == [
        "prefs.baseline.jsonl",
        "prefs.model.jsonl",
    ]
    assert "verdict" not in stdout


def test_without_a_baseline_the_context_effect_reports_the_models_two_scores(cli, tiny_model_dir, tmp_path):
    out = tmp_path / "alone"
    code, stdout, err = cli("eval", "--task", "prefs", "--model", tiny_model_dir, "--out", out, *FAST)
    assert code == 0, err
    effect = json.loads((out / "results.json").read_text())["tasks"]["prefs"]["context_effect"]
    assert set(effect["scores"]) == {"model_with", "model_without", "model_wrong"}
    assert "context_effect" not in effect and "content_effect" not in effect
    assert effect["lift"]["mean"] == pytest.approx(
        effect["scores"]["model_with"]["mean"] - effect["scores"]["model_without"]["mean"]
    )
    assert effect["content_lift"]["mean"] == pytest.approx(
        effect["scores"]["model_with"]["mean"] - effect["scores"]["model_wrong"]["mean"]
    )
    assert effect["verdict"].startswith("no baseline: ") and "--baseline" in effect["verdict"]
    assert "verdict: no baseline" in stdout


def test_items_without_a_context_are_not_answered_again(cli, tiny_model_dir, tmp_path):
    items = tmp_path / "math.jsonl"
    rows = [
        {"question": "2+2?", "answer": 4, "context": "I like short answers."},
        {"question": "3+3?", "answer": 6},
    ]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    code, _, err = cli("eval", "--task", f"file:{items}", "--model", tiny_model_dir, "--out", out, *FAST)
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"][f"file:{items}"]
    assert entry["context_effect"]["n"] == 1
    bare = _read_rows(out / entry["context_effect"]["examples"]["model"])
    assert [r["id"] for r in bare] == ["1"] and "I like short answers." not in json.dumps(bare[0]["prompt"])


def test_an_interrupted_no_context_run_resumes_from_its_saved_batches(tiny_model_dir, tmp_path, monkeypatch):
    import mipo.engine.generation as generation

    common = dict(
        task="prefs",
        model=str(tiny_model_dir),
        limit=4,
        batch_size=2,
        max_new_tokens=5,
        seeds=[4],
        progress=False,
        n_bootstrap=200,
        wrong_context=False,
    )
    whole = json.loads(evaluate(EvalConfig(out=str(tmp_path / "whole"), **common)).read_text())
    real, calls = generation.generate_responses, []

    def killed_in_the_no_context_run(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) > 3:  # two batches with the context, one without
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_responses", killed_in_the_no_context_run)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        evaluate(EvalConfig(out=str(out), **common))
    assert (out / "partial" / "prefs.model.no-context.seed4.jsonl.partial").is_file()
    monkeypatch.setattr(
        generation, "generate_responses", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k)
    )
    calls.clear()
    resumed = json.loads(evaluate(EvalConfig(out=str(out), resume=True, **common)).read_text())
    assert calls == [2]  # only the last no-context batch ran again
    assert _read_rows(out / "examples" / "prefs.model.no-context.jsonl") == _read_rows(
        tmp_path / "whole" / "examples" / "prefs.model.no-context.jsonl"
    )
    assert resumed["tasks"]["prefs"]["context_effect"] == whole["tasks"]["prefs"]["context_effect"]
    assert not (out / "partial").exists()
