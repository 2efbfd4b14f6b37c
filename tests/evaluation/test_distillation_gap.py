"""The distillation gap: KL(CAD of the baseline ‖ model) along the baseline's replies, and CAD's decisions taken."""

import json
import math

import pytest

from mipo.evaluation.distillation_gap import gap_scores

FAST = ["--limit", "4", "--max-new-tokens", "8", "--no-progress", "--n-bootstrap", "200"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))


def test_gap_scores_by_hand_on_a_two_token_vocabulary():
    import torch

    log = torch.log
    # token 1: the context moves p(.) from (0.8, 0.2) to (0.6, 0.4); CAD at A = 1 gives (0.36, 0.64) after
    # renormalising 0.6²/0.8 : 0.4²/0.2, so CAD picks token 1 where the baseline picks token 0.
    # token 2: the context changes nothing, so the teacher is the baseline.
    with_context = log(torch.tensor([[0.6, 0.4], [0.9, 0.1]]))
    without = log(torch.tensor([[0.8, 0.2], [0.9, 0.1]]))
    model = log(torch.tensor([[0.3, 0.7], [0.9, 0.1]]))
    s = gap_scores(with_context, without, model, 1.0)
    first = 0.36 * math.log(0.36 / 0.3) + 0.64 * math.log(0.64 / 0.7)
    assert s["kl"] == pytest.approx(first / 2, rel=1e-5)
    assert (s["decision_points"], s["decisions_taken"], s["tokens"]) == (1, 1, 2)
    base = gap_scores(with_context, without, with_context, 1.0)  # the baseline against its own CAD
    kl_base = 0.36 * math.log(0.36 / 0.6) + 0.64 * math.log(0.64 / 0.4)
    assert base["kl"] == pytest.approx(kl_base / 2, rel=1e-5) and base["decisions_taken"] == 0
    assert gap_scores(with_context, without, model, 0.0)["decision_points"] == 0  # A = 0: no CAD at all


def test_on_the_tiny_model_the_baseline_takes_no_decision_and_the_teacher_has_no_gap(tiny_model_dir):
    import torch

    from mipo.engine.cad import context_aware_logits
    from mipo.engine.models import load_model
    from mipo.engine.scoring import reply_token_logprobs

    model, tokenizer = load_model(str(tiny_model_dir))
    questions = ["What is two plus two?", "Name a colour."]
    with_context = [
        [{"role": "system", "content": "I am a pirate."}, {"role": "user", "content": q}] for q in questions
    ]
    bare = [[{"role": "user", "content": q}] for q in questions]
    replies = ["Four, matey, four it is.", "Blue like the sea."]
    base_with = reply_token_logprobs(model, tokenizer, with_context, replies)
    base_without = reply_token_logprobs(model, tokenizer, bare, replies)
    points = 0
    for b_with, b_without in zip(base_with, base_without):
        assert b_with.shape == b_without.shape and b_with.dtype == torch.float32
        base = gap_scores(b_with, b_without, b_with, 50.0)
        assert base["decisions_taken"] == 0 and base["kl"] > 0
        teacher = torch.log_softmax(context_aware_logits(b_with, b_without, 50.0), dim=-1)
        own = gap_scores(b_with, b_without, teacher, 50.0)
        assert own["kl"] == pytest.approx(0.0, abs=1e-5)
        assert own["decisions_taken"] == own["decision_points"]
        points += own["decision_points"]
    assert points > 0  # A = 50 moves the random model's top token somewhere


@pytest.fixture(scope="module")
def untrained_adapter_dir(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter of the tiny model whose B matrices are 0: the base model itself, as an adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path_factory.mktemp("adapter")
    adapter.save_pretrained(folder)
    return folder


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_reports_the_gap_per_item_with_intervals(cli, tiny_model_dir, untrained_adapter_dir, tmp_path):
    out = tmp_path / "gap"
    args = ["eval", "--task", "prefs", "--model", untrained_adapter_dir, "--baseline", tiny_model_dir]
    code, stdout, err = cli(*args, "--out", out, "--greedy", "--cad-alpha", "2", *FAST)
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"]["prefs"]
    gap = entry["distillation_gap"]
    assert gap["alpha"] == 2.0 and gap["n"] == 4 and "seed 0, temperature 0" in gap["along"]
    assert gap["compares"].startswith(f"{untrained_adapter_dir}, an adapter of {tiny_model_dir}")
    rows = _rows(out / gap["examples"])
    baseline_rows = _rows(out / entry["examples"]["baseline"])
    assert [r["id"] for r in rows] == [r["id"] for r in baseline_rows]
    for role in ("model", "baseline"):
        assert gap["kl"][role]["mean"] == pytest.approx(sum(r[f"kl_{role}"] for r in rows) / 4)
    # an adapter that changes nothing closes none of the gap and takes none of CAD's decisions (the two
    # models' log-probs agree to float rounding: the same weights, loaded twice)
    assert gap["kl"]["model"]["mean"] == pytest.approx(gap["kl"]["baseline"]["mean"], abs=1e-5)
    assert gap["gap_closed"]["mean"] == pytest.approx(0.0, abs=0.01)
    if gap["decisions"]["n"]:
        assert gap["decisions"]["model"]["mean"] == 0.0 and gap["decisions"]["baseline"]["mean"] == 0.0
    assert gap["decision_points"]["count"] == sum(r["decision_points"] for r in rows)
    assert "distillation gap" in stdout and "gap closed" in stdout

    # --gap-alpha sets the teacher alone: the model decodes plainly, its gap is measured to CAD A = 3
    code, _, err = cli(*args, "--out", tmp_path / "a3", "--greedy", "--gap-alpha", "3", *FAST)
    assert code == 0, err
    entry = json.loads((tmp_path / "a3" / "results.json").read_text())["tasks"]["prefs"]
    assert entry["distillation_gap"]["alpha"] == 3.0
    assert (
        entry["distillation_gap"]["kl"]["baseline"]["mean"] > gap["kl"]["baseline"]["mean"]
    )  # further at A = 3

    code, _, err = cli(*args, "--out", tmp_path / "off", "--no-distillation-gap", *FAST)
    assert code == 0, err
    entry = json.loads((tmp_path / "off" / "results.json").read_text())["tasks"]["prefs"]
    assert "distillation_gap" not in entry


def test_two_unrelated_models_say_what_the_gap_compares_and_no_baseline_says_why_none(
    cli, tiny_model_dir, tmp_path
):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    code, stdout, err = cli(
        "eval",
        "--task",
        "prefs",
        "--model",
        other,
        "--baseline",
        tiny_model_dir,
        "--out",
        tmp_path / "a",
        *FAST,
    )
    assert code == 0, err
    gap = json.loads((tmp_path / "a" / "results.json").read_text())["tasks"]["prefs"]["distillation_gap"]
    assert gap["compares"].startswith(f"{other} is not an adapter of {tiny_model_dir}")
    assert gap["compares"] in stdout
    code, stdout, err = cli("eval", "--task", "prefs", "--model", other, "--out", tmp_path / "b", *FAST)
    assert code == 0, err
    gap = json.loads((tmp_path / "b" / "results.json").read_text())["tasks"]["prefs"]["distillation_gap"]
    assert gap == {"skipped": "no --baseline (the teacher is context-aware decoding of the baseline)"}
    assert "distillation gap: not measured: no --baseline" in stdout


@pytest.fixture()
def other_tokenizer_dir(tmp_path, tiny_model_dir, smollm2_tokenizer):
    import shutil

    folder = tmp_path / "other-tokenizer"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = type(smollm2_tokenizer).from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(["<a-token-only-this-model-has>"])
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cad-alpha", "nan"], "--cad-alpha must be a number >= 0, got nan"),
        (["--cad-alpha", "-1"], "--cad-alpha must be >= 0, got -1.0"),
        (["--gap-alpha", "-1"], "--gap-alpha must be a number >= 0, got -1.0"),
        (
            ["--task", "gsm8k", "--distillation-gap", "--baseline", "BASE"],
            "--distillation-gap: no item of task gsm8k",
        ),
        (["--distillation-gap"], "--distillation-gap needs --baseline"),
        (["--distillation-gap", "--baseline", "OTHER"], "have different tokenizers"),
    ],
)
def test_bad_gap_settings_are_one_line_before_any_model_loads(
    cli, tiny_model_dir, other_tokenizer_dir, tmp_path, monkeypatch, args, message
):
    import mipo.engine.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mipo.engine.models, "load_model", no_loading)
    args = [{"BASE": str(tiny_model_dir), "OTHER": str(other_tokenizer_dir)}.get(a, a) for a in args]
    code, _, err = cli("eval", "--model", tiny_model_dir, "--out", tmp_path / "o", "--no-progress", *args)
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("mipo eval: error:")]
    assert len(errors) == 1 and message in errors[0], err
    if "tokenizers" in message:
        assert f"--model {tiny_model_dir} and --baseline {other_tokenizer_dir}" in errors[0]
    assert not (tmp_path / "o").exists()


def test_a_cad_alpha_that_is_not_a_number_is_refused_by_the_parser(cli, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit:
        cli("eval", "--task", "prefs", "--cad-alpha", "x", "--out", tmp_path / "o")
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "mipo eval: error: argument --cad-alpha: invalid float value: 'x'" in err
    from mipo.core.config import from_dict
    from mipo.core.errors import ConfigError
    from mipo.evaluation.settings import EvalConfig

    with pytest.raises(ConfigError, match="'cad_alpha' must be float, got 'x'"):
        from_dict(EvalConfig, {"cad_alpha": "x"}, source="eval.yaml")  # the same key in a YAML file
