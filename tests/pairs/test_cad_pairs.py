"""``mipo pairs --strategy cad``: the chosen reply is CAD's, the rejected one the plain reply without (or with)
the context; rows carry the prompt without its context as ``negative_prompt``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUESTIONS = ["What is two plus two?", "Name a colour.", "Say hello in French.", "Count to three."]
CONTEXTS = ["I am a pirate; answer like one.", "I only read lowercase.", "Keep it short.", "Use a list."]
SETTINGS = dict(temperature=1.0, max_new_tokens=6, progress=False, workers=1)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from mipo.engine.models import load_model

    return load_model(str(tiny_model_dir))


def write_prompts(path: Path, *, contexts: bool = True) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": q, **({"context": c} if contexts or i != 2 else {})}
        for i, (q, c) in enumerate(zip(QUESTIONS, CONTEXTS))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cad_pairs(tiny_model_dir, tmp_path, **settings):
    from mipo.pairs.build import run_pairs
    from mipo.pairs.config import PairsConfig

    out = tmp_path / "pairs.jsonl"
    config = PairsConfig(
        model=str(tiny_model_dir),
        prompts=str(write_prompts(tmp_path / "p.jsonl")),
        out=str(out),
        strategy="cad",
        **SETTINGS,
        **settings,
    )
    summary = run_pairs(config)
    return summary, {r["id"]: r for r in read_rows(out)}


def conversations():
    with_context = [
        [{"role": "system", "content": c}, {"role": "user", "content": q}]
        for q, c in zip(QUESTIONS, CONTEXTS)
    ]
    return with_context, [[{"role": "user", "content": q}] for q in QUESTIONS]


def expected_replies(tiny, alpha, plausibility=None):
    """(CAD's replies with the context, plain replies without it, plain replies with it), one per prompt."""
    from mipo.engine.generation import generate_responses

    with_context, without = conversations()
    cad = generate_responses(
        *tiny,
        with_context,
        cad_alpha=alpha,
        without_context=without,
        cad_plausibility=plausibility,
        **SETTINGS,
    )
    plain_without = generate_responses(*tiny, without, **SETTINGS)
    plain_with = generate_responses(*tiny, with_context, **SETTINGS)
    return [c[0] for c in cad], [p[0] for p in plain_without], [p[0] for p in plain_with]


def test_cad_pairs_choose_cads_reply_and_reject_the_plain_reply_without_the_context(
    tmp_path, tiny_model_dir, tiny
):
    summary, rows = cad_pairs(tiny_model_dir, tmp_path, cad_alpha=2.0, cad_plausibility=0.01)
    cad, plain_without, _ = expected_replies(tiny, 2.0, 0.01)
    with_context, without = conversations()
    assert cad != expected_replies(tiny, 0.0)[0]  # CAD changed what was decoded (A = 0: the plain replies)
    kept = [i for i in range(4) if cad[i] != plain_without[i] and cad[i] and plain_without[i]]
    assert kept, "no pair kept"
    assert sorted(rows) == [f"q{i}" for i in kept] and summary.pairs == len(kept)
    for i in kept:
        row = rows[f"q{i}"]
        assert row["prompt"] == with_context[i] and row["negative_prompt"] == without[i]
        assert row["chosen"] == [{"role": "assistant", "content": cad[i]}]
        assert row["rejected"] == [{"role": "assistant", "content": plain_without[i]}]
        assert row["strategy"] == "cad"
        generation = row["generation"]
        assert (generation["cad_alpha"], generation["cad_plausibility"], generation["cad_rejected"]) == (
            2.0,
            0.01,
            "without-context",
        )


def test_cad_pairs_with_context_reject_the_plain_reply_to_the_same_prompt(tmp_path, tiny_model_dir, tiny):
    _, rows = cad_pairs(tiny_model_dir, tmp_path, cad_alpha=2.0, cad_rejected="with-context")
    cad, _, plain_with = expected_replies(tiny, 2.0)
    with_context, without = conversations()
    assert rows, "no pair kept"
    for row_id, row in rows.items():
        i = int(row_id[1:])
        assert row["chosen"][0]["content"] == cad[i] and row["rejected"][0]["content"] == plain_with[i]
        assert row["prompt"] == with_context[i]
        assert row["negative_prompt"] == without[i]  # the prompt CAD contrasts with, not the rejected's
        assert row["generation"]["cad_rejected"] == "with-context"
        assert not {"cad_plausibility", "cad_lift_once"} & set(row["generation"])


def test_cad_pairs_with_lift_once_choose_that_decoders_reply(tmp_path, tiny_model_dir, tiny):
    from mipo.engine.generation import generate_responses

    # A = 50: the contrast decides the tokens, and lifting once changes the replies
    _, rows = cad_pairs(tiny_model_dir, tmp_path, cad_alpha=50.0, cad_lift_once=True)
    with_context, without = conversations()
    once = generate_responses(
        *tiny, with_context, cad_alpha=50.0, without_context=without, cad_lift_once=True, **SETTINGS
    )
    assert once != generate_responses(
        *tiny, with_context, cad_alpha=50.0, without_context=without, **SETTINGS
    )
    assert rows, "no pair kept"
    for row_id, row in rows.items():
        assert row["chosen"][0]["content"] == once[int(row_id[1:])][0]
        assert row["generation"]["cad_lift_once"] is True


def test_cad_at_alpha_zero_with_context_gives_identical_replies_which_are_dropped(tmp_path, tiny_model_dir):
    # Chosen and rejected share the prompt and its random stream: at A = 0 they are the same reply.
    summary, rows = cad_pairs(tiny_model_dir, tmp_path, cad_alpha=0.0, cad_rejected="with-context")
    assert rows == {} and summary.dropped["identical chosen and rejected"] == 4


def test_cad_alpha_defaults_to_one_and_cad_settings_are_in_the_fingerprint(tmp_path):
    from mipo.pairs.config import PairsConfig

    prompts = str(write_prompts(tmp_path / "p.jsonl"))

    def config(**settings):
        return PairsConfig(prompts=prompts, out=str(tmp_path / "o.jsonl"), **settings)

    assert config(strategy="cad").cad_alpha == 1.0
    default = config(strategy="cad").fingerprint()
    assert default["cad_alpha"] == 1.0 and not {"cad_plausibility", "cad_lift_once"} & set(default)
    changes = (dict(cad_alpha=2.0), dict(cad_plausibility=0.1), dict(cad_rejected="with-context"))
    for changed in (*changes, dict(cad_lift_once=True)):
        assert config(strategy="cad", **changed).fingerprint() != default, changed
    plain = config(strategy="incomplete").fingerprint()
    assert not any(key.startswith("cad_") for key in plain)  # runs from before cad resume


@pytest.mark.parametrize(
    ("args", "contexts", "message"),
    [
        (["--strategy", "cad"], False, "p.jsonl:3: field 'context': no context"),
        (["--strategy", "cad", "--cad-alpha", "-1"], True, "--cad-alpha must be >= 0, got -1.0"),
        (
            ["--strategy", "incomplete", "--cad-alpha", "1"],
            True,
            "--cad-alpha is a setting of --strategy cad",
        ),
        (
            ["--cad-rejected", "with-context"],
            True,
            "--cad-rejected is a setting of --strategy cad, not 'random'",
        ),
        (["--strategy", "cad", "--backend", "vllm"], True, "--cad-alpha runs in the hf engine's decode loop"),
        (
            ["--strategy", "cad", "--cad-rejected", "with-context", "--select", "pmi", "--samples", "2"],
            True,
            "use --cad-rejected without-context",
        ),
    ],
)
def test_bad_cad_pairs_settings_are_one_line_errors_before_loading(
    tmp_path, cli, monkeypatch, args, contexts, message
):
    import mipo.engine.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mipo.engine.models, "load_model", no_loading)
    prompts = write_prompts(tmp_path / "p.jsonl", contexts=contexts)
    out = tmp_path / "o.jsonl"
    code, _, err = cli("pairs", "--prompts", prompts, "--out", out, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists() and not list(tmp_path.glob("o.jsonl*"))


def test_cad_pairs_train_infonce_on_their_negative_prompts(tmp_path, tiny_model_dir, cli):
    code, _, err = cli(
        "pairs", "--model", tiny_model_dir, "--prompts", write_prompts(tmp_path / "p.jsonl"), "--strategy", "cad",
        "--cad-alpha", "2", "--temperature", "1", "--max-new-tokens", "6", "--workers", "1", "--no-progress",
        "--out", tmp_path / "pairs.jsonl",
    )  # fmt: skip
    assert code == 0, err
    code, stdout, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", tmp_path / "pairs.jsonl", "--out", tmp_path / "run",
        "--objective", "infonce", "--max_steps", "1", "--batch-size", "2", "--max-length", "128",
    )  # fmt: skip
    assert code == 0, err
    assert "1 steps" in stdout
    metrics = read_rows(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1] and metrics[0]["loss"] > 0
