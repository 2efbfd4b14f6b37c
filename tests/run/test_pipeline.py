"""`mipo run`: overrides, stage keys (skip / resume / rerun downstream), example configs, and the whole chain."""

import json
from pathlib import Path

import pytest

from mipo.core.errors import ConfigError
from mipo.run.config import apply_overrides, load_run_config
from mipo.run.pipeline import build_stages
from mipo.run.stages import Stage, run_stage, stage_plan

ROOT = Path(__file__).resolve().parents[2]
# mipo run's configs; configs/accelerate/ holds accelerate launch's
RUN_CONFIGS = [p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts]
CONFIGS = sorted(RUN_CONFIGS) + sorted((ROOT / "src" / "mipo" / "configs").glob("*.yaml"))


def test_overrides_set_nested_and_list_keys():
    values = {"train": {"epochs": 1}, "eval": [{"task": "prefs", "limit": 80}]}
    out = apply_overrides(values, ["train.learning_rate=1e-4", "eval.0.limit=20", "model=org/name"])
    assert out == {
        "train": {"epochs": 1, "learning_rate": 1e-4},
        "eval": [{"task": "prefs", "limit": 20}],
        "model": "org/name",
    }
    assert values["eval"][0]["limit"] == 80  # the input is not changed
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        apply_overrides(values, ["train.epochs"])
    with pytest.raises(ConfigError, match="no list item 3"):
        apply_overrides(values, ["eval.3.limit=1"])


def test_unknown_keys_are_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prompts: {task: prefs}\ntrian: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'trian'"):
        load_run_config(cfg)
    cfg.write_text("prompts: {task: prefs}\ntrain: {epoch: 1}\n")
    with pytest.raises(ConfigError, match="train: unknown key 'epoch'"):
        build_stages(load_run_config(cfg, [f"run_dir={tmp_path / 'run'}"]))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads_and_builds(path, tmp_path, monkeypatch, stub_vllm):
    """(A stub vLLM stands in for the configs that generate with it: without vLLM they are refused.)"""
    monkeypatch.chdir(ROOT)
    config = load_run_config(path, [f"run_dir={tmp_path / 'run'}"])
    names = [s.name for s in build_stages(config)]
    assert names[:3] == ["prompts", "pairs", "train"] and names[-1] == "report"
    assert any(n.startswith("eval:") for n in names)


def test_stage_skips_resumes_and_reruns(tmp_path):
    calls = []

    def work(folder, resume):
        calls.append(resume)
        (folder / "out.txt").write_text("done")

    stage = Stage("s", tmp_path / "s", {"a": 1}, [], work)
    assert run_stage(stage) == "ran"
    assert run_stage(stage) == "skipped"
    state = json.loads((tmp_path / "s" / "stage.json").read_text())
    assert state["finished"] and state["settings"] == {"a": 1}
    # interrupted: stage.json says not finished with the same key -> resume
    state["finished"] = False
    (tmp_path / "s" / "stage.json").write_text(json.dumps(state))
    assert run_stage(stage) == "resumed" and calls[-1] is True
    # changed settings: the old output goes, the stage reruns from scratch
    (tmp_path / "s" / "stale.txt").write_text("old")
    changed = Stage("s", tmp_path / "s", {"a": 2}, [], work)
    assert stage_plan(changed) == ("rerun", "changed: a: 1 -> 2")
    assert run_stage(changed) == "ran" and calls[-1] is False
    assert not (tmp_path / "s" / "stale.txt").exists()
    assert stage_plan(changed) == ("skip", f"finished (key {changed.key})")
    downstream = Stage("t", tmp_path / "t", {"b": {"c": 1}}, [stage.key], work)
    run_stage(downstream)
    moved = Stage("t", tmp_path / "t", {"b": {"c": 2}, "d": 0}, [changed.key], work)
    assert stage_plan(moved) == (
        "rerun",
        "changed: b.c: 1 -> 2; d: (unset) -> 0; an earlier stage's key changed",
    )
    assert stage_plan(Stage("u", tmp_path / "u", {}, [], work)) == ("run", "not run yet")


def test_plan_prints_what_each_stage_would_do_and_runs_nothing(cli, tmp_path):
    demo = ROOT / "src" / "mipo" / "configs" / "demo.yaml"
    run_dir = tmp_path / "runs" / "demo"
    code, out, _ = cli("run", str(demo), f"run_dir={run_dir}", "--plan")
    assert code == 0 and not run_dir.exists()
    lines = out.splitlines()
    assert lines[0].split() == ["prompts", "run", "not", "run", "yet"]
    assert [line.split()[0] for line in lines] == [
        s.name for s in build_stages(load_run_config(demo, [f"run_dir={run_dir}"]))
    ]


def test_a_finished_stage_is_copied_from_a_sibling_run_folder(tmp_path):
    # Two runs that share their pairs settings (e.g. DPO and SFT on the same pairs): the second copies the
    # first's finished stage instead of generating again; a different key is never copied.
    calls = []

    def work(folder, resume):
        calls.append(folder)
        (folder / "pairs.jsonl").write_text("rows")

    first = Stage("pairs", tmp_path / "dpo" / "pairs", {"strategy": "incomplete"}, ["k"], work)
    assert run_stage(first, tmp_path / "dpo") == "ran"
    twin = Stage("pairs", tmp_path / "sft" / "pairs", {"strategy": "incomplete"}, ["k"], work)
    assert run_stage(twin, tmp_path / "sft") == "copied"
    assert (tmp_path / "sft" / "pairs" / "pairs.jsonl").read_text() == "rows" and len(calls) == 1
    assert run_stage(twin, tmp_path / "sft") == "skipped"
    other = Stage("pairs", tmp_path / "rand" / "pairs", {"strategy": "random"}, ["k"], work)
    assert run_stage(other, tmp_path / "rand") == "ran" and len(calls) == 2
    alone = Stage("pairs", tmp_path / "solo" / "pairs", {"strategy": "incomplete"}, ["k"], work)
    assert run_stage(alone) == "ran"  # no run folder given (reuse_stages: false): never copied


def test_the_seed_is_part_of_the_prompts_key_unless_export_seed_is_set(tmp_path):
    # prefs train profiles are drawn with the run's seed: another seed must not reuse the prompts stage
    demo = ROOT / "src" / "mipo" / "configs" / "demo.yaml"

    def prompts_key(*overrides):
        return build_stages(load_run_config(demo, [f"run_dir={tmp_path}", *overrides]))[0].key

    assert prompts_key("seed=0") != prompts_key("seed=1")
    assert prompts_key("seed=0", "prompts.export_seed=0") == prompts_key("seed=1", "prompts.export_seed=0")


def test_upstream_change_changes_downstream_keys(tmp_path):
    base = load_run_config(ROOT / "src" / "mipo" / "configs" / "demo.yaml", [f"run_dir={tmp_path}"])
    changed = load_run_config(
        ROOT / "src" / "mipo" / "configs" / "demo.yaml", [f"run_dir={tmp_path}", "pairs.max_new_tokens=32"]
    )
    a = {s.name: s.key for s in build_stages(base)}
    b = {s.name: s.key for s in build_stages(changed)}
    assert a["prompts"] == b["prompts"]
    assert all(a[n] != b[n] for n in a if n != "prompts")


@pytest.mark.slow
def test_demo_pipeline_on_tiny_model_writes_every_artifact(tiny_model_dir, tmp_path, cli, caplog):
    """`mipo demo` with the tiny model and small sizes: every stage's artifact, the table, a report that renders."""
    run = tmp_path / "run"
    small = [
        f"model={tiny_model_dir}",
        "prompts.limit=8",
        "pairs.max_new_tokens=8",
        "pairs.progress=false",
        "train.epochs=1",
        "eval.0.limit=6",
        "eval.0.max_new_tokens=8",
        "eval.1.limit=6",
        "eval.1.k=2",
        "eval.1.max_new_tokens=8",
        "eval.2.limit=6",
        "eval.2.max_new_tokens=8",
    ]
    code, out, err = cli("demo", "--run-dir", run, *small)
    assert code == 0, err
    for path in [
        "prompts/prompts.jsonl",
        "pairs/pairs.jsonl",
        "train/model/adapter_config.json",
        "train/model/metrics.jsonl",
        "eval/prefs/results.json",
        "eval/pmi/results.json",
        "eval/pmi-context/results.json",
        "report/context-effect-prefs.png",
        "report/pmi-pmi-context.png",
        "report/report.md",
        "report/report.html",
        "report/training.png",
        "report/pmi-pmi.png",
        "report/preferences-prefs.png",
    ]:
        assert (run / path).is_file(), path
    pairs = [json.loads(line) for line in (run / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["strategy"] == "incomplete" for p in pairs)
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["task", "n"]
    assert [line.split()[0] for line in lines[1:4]] == ["pmi", "pmi", "prefs"]
    assert lines[2].startswith("pmi (context)")
    assert "prefs: with and without the user's context (n=6 items)" in lines
    assert any(line.startswith("  verdict: ") for line in lines)
    assert "report:" in out
    html = (run / "report" / "report.html").read_text()
    for section in [
        "Results",
        "Preference types",
        "pointwise mutual information",
        "Personalization or a change of style? (prefs)",
        "The objective: context PMI",
        "Training",
        "Examples",
        "What was run",
    ]:
        assert section in html
    assert html.count("data:image/png;base64,") == 5
    # rerunning skips every stage
    caplog.clear()
    with caplog.at_level("INFO", logger="mipo.run.pipeline"):
        code, _, err = cli("demo", "--run-dir", run, *small)
    assert code == 0 and caplog.text.count(": skipped") == 7

    # the HTML report renders in a real browser: headless Chromium takes a screenshot that is not blank
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make test-slow installs it)")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,6000",
            (run / "report" / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.std() > 0.05  # text, tables and figures: not a blank page


def test_an_unknown_key_from_an_override_names_the_override_not_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prompts: {task: prefs}\neval: [{task: prefs}]\n")
    run_dir = f"run_dir={tmp_path / 'run'}"
    for override, message in [
        ("pairs.bogus=1", "override 'pairs.bogus=1': unknown key 'bogus'"),
        ("bogus=1", "override 'bogus=1': unknown key 'bogus'"),
        ("eval.0.limt=3", r"override 'eval.0.limt=3': unknown key 'limt' \(did you mean limit"),
        ("report.exampels=2", "override 'report.exampels=2': unknown key 'exampels'"),
        ("model.name=x", "override 'model.name=x': 'model' is one value, not a mapping"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_stages(load_run_config(cfg, [run_dir, override]))
    # the same key in the file is the file's
    cfg.write_text("prompts: {task: prefs}\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'bogus'"):
        load_run_config(cfg, [run_dir])
    cfg.write_text("prompts: {task: prefs}\nreport: {exampels: 2}\n")
    with pytest.raises(ConfigError, match=r"report: unknown key 'exampels'"):
        build_stages(load_run_config(cfg, [run_dir]))


def test_report_examples_in_the_run_config_reach_the_report(tmp_path):
    from run_folders import write_run_folder

    demo = ROOT / "src" / "mipo" / "configs" / "demo.yaml"
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, items=6)
    report = build_stages(load_run_config(demo, [f"run_dir={run_dir}", "report.examples=1"]))[-1]
    report.run(report.folder, False)
    text = (run_dir / "report" / "report.md").read_text()
    assert [line for line in text.splitlines() if line.startswith("| [user] question")] == [
        "| [user] question 1 | baseline reply 1<br><br>(score 0.00) | model reply 1<br><br>(score 1.00) |"
    ]
    assert text.startswith("# mipo demo: SmolLM2-135M-Instruct")
    # the title is the report's setting too: another title rebuilds the report
    retitled = build_stages(load_run_config(demo, [f"run_dir={run_dir}", "report.examples=1", "title=x"]))[-1]
    assert retitled.key != report.key


def test_an_interrupted_stage_rerun_with_other_settings_starts_from_nothing(tmp_path):
    def interrupted(folder, resume):
        (folder / "rows.jsonl").write_text("a1\na2\n")
        raise KeyboardInterrupt

    first = Stage("pairs", tmp_path / "pairs", {"model": "a"}, [], interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stage(first)
    seen = []

    def work(folder, resume):
        seen.append((resume, sorted(p.name for p in folder.iterdir())))
        with (folder / "rows.jsonl").open("a") as f:
            f.write("b1\n")

    second = Stage("pairs", tmp_path / "pairs", {"model": "b"}, [], work)
    assert stage_plan(second) == ("rerun", "changed: model: a -> b")
    assert run_stage(second) == "ran"
    assert seen == [(False, ["stage.json"])]  # nothing of the first run was left to resume from
    assert (tmp_path / "pairs" / "rows.jsonl").read_text() == "b1\n"


def test_new_weights_in_the_model_folder_change_the_key_instead_of_resuming(tmp_path):
    # The same folder name with other weights must not resume (and mix rows with) the old weights' run.
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"old weights")
    demo = ROOT / "src" / "mipo" / "configs" / "demo.yaml"

    def pairs_stage():
        return build_stages(load_run_config(demo, [f"run_dir={tmp_path / 'run'}", f"model={model}"]))[1]

    old = pairs_stage()

    def interrupted(folder, resume):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(Stage(old.name, old.folder, old.settings, old.upstream, interrupted, old.inputs))
    assert stage_plan(pairs_stage()) == ("resume", "interrupted")
    (model / "model.safetensors").write_bytes(b"new weights, retrained")
    action, reason = stage_plan(pairs_stage())
    assert action == "rerun" and reason.startswith("changed: inputs.model.files:")


def test_another_mipo_version_reruns_a_finished_stage(tmp_path, monkeypatch):
    import mipo

    def work(folder, resume):
        (folder / "out.txt").write_text("done")

    assert run_stage(Stage("s", tmp_path / "s", {"a": 1}, [], work)) == "ran"
    before = mipo.__version__
    monkeypatch.setattr(mipo, "__version__", "9.9.9")
    again = Stage("s", tmp_path / "s", {"a": 1}, [], work)
    assert stage_plan(again) == ("rerun", f"changed: mipo version: {before} -> 9.9.9")


def test_an_edited_items_file_reruns_its_evaluation(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "1", "prompt": "2+2?", "answer": "4"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"prompts: {{task: prefs}}\neval: [{{task: 'file:{items}', name: mine}}]\n")

    def eval_key():
        stages = build_stages(load_run_config(cfg, [f"run_dir={tmp_path / 'run'}"]))
        return next(s for s in stages if s.name == "eval:mine").key

    before = eval_key()
    assert eval_key() == before
    items.write_text('{"id": "1", "prompt": "2+3?", "answer": "5"}\n')
    assert eval_key() != before


def test_a_run_dir_that_cannot_be_made_is_one_line_and_a_bad_setting_writes_nothing(cli, tmp_path):
    demo = ROOT / "src" / "mipo" / "configs" / "demo.yaml"
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    code, _, err = cli("run", demo, f"run_dir={blocker / 'run'}")
    assert code == 2 and err.strip().splitlines() == [
        f"mipo run: error: run_dir {blocker / 'run'}: cannot write there (Not a directory)"
    ]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_config.json").write_text("the previous run's")
    code, _, err = cli("run", demo, f"run_dir={run_dir}", "pairs.strategy=bogus")
    assert code == 2 and "strategy" in err
    assert (run_dir / "run_config.json").read_text() == "the previous run's"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pairs.limit=0", "pairs: limit must be at least 1, got 0 (pairs.limit N)"),
        ("train.learning_rate=-1", "train.learning_rate must be > 0, got -1.0"),
    ],
)
def test_a_bad_stage_setting_names_the_config_key_not_the_commands_flag(cli, tmp_path, override, message):
    demo = ROOT / "src" / "mipo" / "configs" / "demo.yaml"
    code, _, err = cli("run", "--plan", demo, f"run_dir={tmp_path / 'run'}", override)
    assert code == 2 and err.strip().splitlines() == [f"mipo run: error: {message}"]


def test_a_plan_read_by_a_pipe_that_closes_early_ends_without_a_traceback(tmp_path):
    # `mipo run --plan cfg | head -1`: the reader leaves before mipo writes; exit 141 as a shell's tools do
    import os
    import subprocess
    import sys

    demo = ROOT / "src" / "mipo" / "configs" / "demo.yaml"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before mipo writes a line
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "mipo", "run", "--plan", str(demo), f"run_dir={tmp_path / 'run'}"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=120,
    )
    os.close(write)
    assert done.returncode == 141 and done.stderr == ""
