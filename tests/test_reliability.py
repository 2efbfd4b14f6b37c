"""Nothing lost (issue 13): resumes that check what they resume, overwrites that never eat inputs or old
outputs, bad inputs and OS errors (a full disk included) as one line with exit code 2. SIGKILL + ``--resume``
at random points is in test_reliability_kills.py. docs/reliability.md counts what these files cover."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mipo.core.files import RowWriter

SRC = Path(__file__).parents[1] / "src"


def write_prompts(path: Path, n: int = 6, *, first: int = 0) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": f"Question {i}: what is {i} plus {i}?", "context": f"I am user {i % 3}."}
        for i in range(first, first + n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def args(command: str, model: Path, prompts: Path, out: Path | str, *extra: str) -> list:
    """``mipo COMMAND`` on the tiny model, 4 new tokens, flushed every 2 prompts."""
    common = ["--max-new-tokens", "4", "--chunk-size", "2", "--no-progress"]
    return [command, "--model", model, "--prompts", prompts, "--out", out, *common, *extra]


def perturbed_copy(model_dir: Path, folder: Path) -> Path:
    """Another model of the same shape (every weight moved a little), as a baseline whose replies differ."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    generator = torch.Generator().manual_seed(1)
    moved = {name: w + 0.05 * torch.randn(w.shape, generator=generator) for name, w in weights.items()}
    save_file(moved, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def interrupt_after_rows(monkeypatch, rows: int) -> None:
    """Make the next run stop with Ctrl-C once ``rows`` rows are flushed (as a user interrupting it)."""
    real_write = RowWriter.write

    def write(self, row):
        if self.count >= rows:
            raise KeyboardInterrupt
        real_write(self, row)

    monkeypatch.setattr(RowWriter, "write", write)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("mipo ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_resume_of_another_job_is_refused_naming_what_differs(
    command, tmp_path, tiny_model_dir, cli, monkeypatch
):
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    interrupt_after_rows(monkeypatch, 2)
    code, _, _ = cli(*args(command, tiny_model_dir, prompts, out))
    monkeypatch.undo()
    partial = tmp_path / "out.jsonl.partial"
    assert code == 130 and partial.exists()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("out.jsonl.*")}
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--seed", "1", "--resume"))
    assert code == 2 and "seed: 0 -> 1" in one_error_line(err)
    other = write_prompts(tmp_path / "other.jsonl", first=10)
    code, _, err = cli(*args(command, tiny_model_dir, other, out, "--temperature", "1", "--resume"))
    line = one_error_line(err)
    assert code == 2 and "prompts: sha256:" in line and "temperature: 0.1 -> 1.0" in line
    assert {p.name: p.read_bytes() for p in tmp_path.glob("out.jsonl.*")} == before  # untouched
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--resume"))
    assert code == 0 and not partial.exists() and not list(tmp_path.glob("out.jsonl.*"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"q{i}" for i in range(6)]


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_resume_under_other_workers_or_threads_is_refused_naming_them(
    command, tmp_path, tiny_model_dir, cli, monkeypatch
):
    """Other decode workers or torch threads can round a near-tied logit the other way: a resume under them
    would mix two runs' replies, so it is refused, naming the setting (docs/reliability.md)."""
    import torch

    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    interrupt_after_rows(monkeypatch, 2)
    assert cli(*args(command, tiny_model_dir, prompts, out, "--workers", "2"))[0] == 130
    monkeypatch.undo()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("out.jsonl.*")}
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--workers", "1", "--resume"))
    line = one_error_line(err)
    assert code == 2 and "environment.workers: 2 -> 1" in line, line
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # one worker decodes in this process, on its threads
        code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--workers", "2", "--resume"))
        assert code == 0, err  # two workers decode on one thread each, whatever this process has
        assert {p.name: p.read_bytes() for p in tmp_path.glob("out.jsonl.*")} != before
    finally:
        torch.set_num_threads(threads)


def test_resume_under_other_threads_is_refused_with_one_worker(tmp_path, tiny_model_dir, cli, monkeypatch):
    import torch

    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    interrupt_after_rows(monkeypatch, 2)
    assert cli(*args("sample", tiny_model_dir, prompts, out, "--workers", "1"))[0] == 130
    monkeypatch.undo()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        code, _, err = cli(*args("sample", tiny_model_dir, prompts, out, "--workers", "1", "--resume"))
    finally:
        torch.set_num_threads(threads)
    line = one_error_line(err)
    assert code == 2 and f"environment.torch_threads: {threads} -> {threads + 1}" in line, line


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_resume_with_another_model_or_reply_length_is_refused(
    command, tmp_path, tiny_model_dir, cli, monkeypatch
):
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    interrupt_after_rows(monkeypatch, 2)
    assert cli(*args(command, tiny_model_dir, prompts, out))[0] == 130
    monkeypatch.undo()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("out.jsonl.*")}
    other = perturbed_copy(tiny_model_dir, tmp_path / "other-model")
    code, _, err = cli(*args(command, other, prompts, out, "--resume"))
    line = one_error_line(err)
    assert code == 2 and "cannot resume" in line and "model" in line.split("settings", 1)[1], line
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--resume", "--max-new-tokens", "5"))
    assert code == 2 and "max_new_tokens: 4 -> 5" in one_error_line(err)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("out.jsonl.*")} == before  # untouched


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_output_spelled_another_way_than_the_input_is_refused(
    command, tmp_path, tiny_model_dir, cli, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    prompts = write_prompts(tmp_path / "p.jsonl")
    before = prompts.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.jsonl").symlink_to("p.jsonl")
    for given, out in [("./p.jsonl", "p.jsonl"), ("sub/../p.jsonl", str(prompts)), ("p.jsonl", "link.jsonl")]:
        code, _, err = cli(*args(command, tiny_model_dir, given, out, "--overwrite"))
        assert code == 2 and f"--out {out} would replace the input --prompts {given}" in one_error_line(err)
    assert prompts.read_bytes() == before and (tmp_path / "link.jsonl").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "p.jsonl", "sub"]


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_output_that_is_an_input_is_refused_before_anything_is_touched(
    command, tmp_path, tiny_model_dir, cli
):
    prompts = write_prompts(tmp_path / "p.jsonl")
    before = prompts.read_bytes()
    code, _, err = cli(*args(command, tiny_model_dir, prompts, prompts, "--overwrite"))
    assert code == 2 and f"would replace the input --prompts {prompts}" in one_error_line(err)
    assert prompts.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_overwrite_keeps_the_old_output_until_the_new_one_is_finished(
    command, tmp_path, tiny_model_dir, cli, monkeypatch
):
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    assert cli(*args(command, tiny_model_dir, prompts, out))[0] == 0
    old = out.read_bytes()
    interrupt_after_rows(monkeypatch, 1)
    code, _, _ = cli(*args(command, tiny_model_dir, prompts, out, "--overwrite", "--seed", "3"))
    assert code == 130 and out.read_bytes() == old  # the failed overwrite left the old output whole
    monkeypatch.undo()
    assert cli(*args(command, tiny_model_dir, prompts, out, "--overwrite", "--seed", "3"))[0] == 0
    assert out.read_bytes() != old


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_bad_limits_and_unwritable_outputs_are_one_line(command, tmp_path, tiny_model_dir, cli):
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    for limit in ("0", "-3"):
        code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--limit", limit))
        assert code == 2 and f"limit must be at least 1, got {limit}" in one_error_line(err)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for bad in ("/proc/mipo-test.jsonl", "/proc/mipo-test/x.jsonl", str(a_file / "x.jsonl")):
        code, _, err = cli(*args(command, tiny_model_dir, prompts, bad))
        line = one_error_line(err)
        assert code == 2 and bad.rsplit("/", 1)[0] in line, line
    assert not out.exists()


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_resume_of_a_finished_output_says_it_is_finished(command, tmp_path, tiny_model_dir, cli):
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    assert cli(*args(command, tiny_model_dir, prompts, out))[0] == 0
    finished = out.read_bytes()
    # a kill between the final rename and the clean-up leaves the job's fingerprint (and pairs' response
    # caches) beside the finished output: they hold nothing the output lacks, and the next call removes them
    leftovers = [tmp_path / "out.jsonl.fingerprint.json"]
    leftovers += [tmp_path / "out.jsonl.responses-0.partial"] if command == "pairs" else []
    for path in leftovers:
        path.write_text("{}\n")
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--resume"))
    line = one_error_line(err)
    assert code == 2 and "is a finished run: there is nothing to resume" in line and "--overwrite" in line
    assert out.read_bytes() == finished and not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "p.jsonl"]


def test_csv_without_the_prompt_column_names_the_columns_found(tmp_path, tiny_model_dir, cli):
    prompts = tmp_path / "p.csv"
    prompts.write_text("\ufeffid,question\n1,Hi?\n2,Ho?\n", encoding="utf-8")
    code, _, err = cli(*args("sample", tiny_model_dir, prompts, tmp_path / "o.jsonl"))
    line = one_error_line(err)
    assert (
        code == 2
        and f"{prompts}:2: field 'prompt': missing or empty prompt (fields found: id, question)" in line
    )


# --- a full disk: one line, then --resume on more space gives the uninterrupted bytes ---------------------


@pytest.fixture()
def small_tmpfs(tmp_path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'not root'})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_full_disk_is_one_line_and_the_flushed_rows_resume(
    command, small_tmpfs, tmp_path, tiny_model_dir, cli
):
    prompts = write_prompts(tmp_path / "p.jsonl", n=24)
    full = tmp_path / "full.jsonl"
    assert cli(*args(command, tiny_model_dir, prompts, full, "--temperature", "1"))[0] == 0
    out = small_tmpfs / "out.jsonl"
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--temperature", "1"))
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and str(small_tmpfs) in line, line
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_tmpfs)], check=True)
    code, _, err = cli(*args(command, tiny_model_dir, prompts, out, "--temperature", "1", "--resume"))
    assert code == 0, err
    assert out.read_bytes() == full.read_bytes()


def test_eval_full_disk_is_one_line_and_the_saved_batches_resume(small_tmpfs, tmp_path, tiny_model_dir, cli):
    common = ["eval", "--task", "gsm8k", "--model", tiny_model_dir, "--limit", "40", "--batch-size", "4"]
    common += ["--max-new-tokens", "8", "--temperature", "1", "--workers", "1", "--n-bootstrap", "10"]
    common += ["--no-progress"]
    full = tmp_path / "full"
    assert cli(*common, "--out", full)[0] == 0
    out = small_tmpfs / "eval"
    code, _, err = cli(*common, "--out", out)
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and "rerun with --resume" in line, line
    assert not (out / "results.json").exists() and list((out / "partial").glob("*.partial"))
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_tmpfs)], check=True)
    code, _, err = cli(*common, "--out", out, "--resume")
    assert code == 0, err
    name = "examples/gsm8k.model.jsonl"
    assert (out / name).read_bytes() == (full / name).read_bytes() and not (out / "partial").exists()


def test_eval_output_that_cannot_be_made_is_one_line(tmp_path, tiny_model_dir, cli):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for bad in (Path("/proc/mipo-test/eval"), a_file / "eval"):
        code, _, err = cli("eval", "--task", "gsm8k", "--model", tiny_model_dir, "--out", bad, "--limit", "2")
        line = one_error_line(err)
        assert code == 2 and str(bad.parent) in line, line
    assert a_file.read_text() == "x"


def test_a_byte_order_mark_is_dropped_from_pairs_items_and_run_configs(tmp_path):
    from mipo.formats.pairs_file import read_pairs
    from mipo.run.config import load_run_config
    from mipo.tasks import load_task

    bom = "\ufeff"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        bom + json.dumps({"prompt": "Hi", "chosen": "yes", "rejected": "no"}) + "\n", encoding="utf-8"
    )
    assert read_pairs(pairs) == [{"prompt": "Hi", "chosen": "yes", "rejected": "no"}]
    items = tmp_path / "items.csv"
    items.write_text(bom + "id,question,answer\nq7,1+1?,2\n", encoding="utf-8")
    assert [item.id for item in load_task(f"file:{items}").items] == ["q7"]
    config = tmp_path / "run.yaml"
    config.write_text(bom + "title: mine\nprompts: {task: prefs}\n", encoding="utf-8")
    assert load_run_config(config).title == "mine"


def test_read_only_file_system_is_one_line(small_tmpfs, tmp_path, tiny_model_dir, cli):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = small_tmpfs / "out.jsonl"
    code, _, err = cli(*args("pairs", tiny_model_dir, prompts, out))
    line = one_error_line(err)
    assert code == 2 and str(small_tmpfs) in line and "Read-only file system" in line


@pytest.mark.parametrize("command", ["pairs", "sample"])
def test_a_bad_prompts_file_leaves_no_file_behind(command, tmp_path, tiny_model_dir, cli):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Hi?"}\n{"prompt": 3}\n', encoding="utf-8")
    code, _, err = cli(*args(command, tiny_model_dir, prompts, tmp_path / "out" / "o.jsonl"))
    assert code == 2 and f"{prompts}:2: field 'prompt'" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_a_train_error_on_the_real_command_line_is_one_line(tmp_path, tiny_model_dir):
    # In a subprocess: pytest captures warnings, a user's terminal does not (transformers' FutureWarning for
    # gradient_checkpointing was printed above the error line).
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Hi", "chosen": "yes", "rejected": "no"}) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "mipo", "train", "--model", str(tiny_model_dir), "--pairs", str(pairs)]
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "--out", "/proc/mipo-test/run"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "mipo train: error: --out /proc/mipo-test/run: cannot create it (No such file or directory)"
    ]
