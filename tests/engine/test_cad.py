"""Context-aware decoding (``mipo sample --cad-alpha A``): ``(1+A) log p(.|x,c) - A log p(.|x)`` per token."""

from __future__ import annotations

import json

import pytest

QUESTIONS = ["What is two plus two?", "Name a colour.", "Say hello in French, briefly please."]
CONTEXTS = ["I am a pirate; answer like one.", "I only read lowercase.", "Keep it short: I am busy today."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from mipo.engine.models import load_model

    return load_model(str(tiny_model_dir))


def pairs_of_conversations():
    with_context = [
        [{"role": "system", "content": c}, {"role": "user", "content": q}]
        for q, c in zip(QUESTIONS, CONTEXTS)
    ]
    return with_context, [[{"role": "user", "content": q}] for q in QUESTIONS]


def reference_cad_greedy(model, tokenizer, alpha: float, steps: int) -> list[list[int]]:
    """CAD by hand: full forward passes over each prompt (with and without context) plus the tokens so far;
    ``steps`` tokens each, stop tokens included (the tiny random model's greedy reply stops at once)."""
    import torch

    from mipo.engine.generation import encode_conversations

    with_context, without = pairs_of_conversations()
    out = []
    for ctx_ids, plain_ids in zip(
        encode_conversations(tokenizer, with_context), encode_conversations(tokenizer, without)
    ):
        new = []
        for _ in range(steps):
            with torch.no_grad():
                a = model(input_ids=torch.tensor([ctx_ids + new])).logits[0, -1].float()
                b = model(input_ids=torch.tensor([plain_ids + new])).logits[0, -1].float()
            scores = (1 + alpha) * torch.log_softmax(a, -1) - alpha * torch.log_softmax(b, -1)
            new.append(int(scores.argmax()))
        out.append(new)
    return out


def decode_tokens(model, tokenizer, alpha: float | None, steps: int) -> list[list[int]]:
    """The engine's decode loop on the same prompts (two rows per batch), with no stop token."""
    import torch

    from mipo.engine.generation import GenerationStats, _decode_batch, encode_conversations

    with_context, without = pairs_of_conversations()
    jobs = [
        (ids, 0, plain)
        for ids, plain in zip(
            encode_conversations(tokenizer, with_context), encode_conversations(tokenizer, without)
        )
    ]
    settings = dict(stops=torch.tensor([-1]), pad_id=tokenizer.pad_token_id, temperature=0, top_p=1.0)
    settings |= dict(max_new_tokens=steps, drop_finished=True, stats=GenerationStats(), cad_alpha=alpha)
    return [
        tokens for first in (0, 2) for tokens in _decode_batch(model, jobs[first : first + 2], **settings)
    ]


def test_cad_at_alpha_zero_decodes_as_plain_decoding(tiny):
    from mipo.engine.generation import generate_responses

    model, tokenizer = tiny
    with_context, without = pairs_of_conversations()
    for kwargs in (dict(temperature=0), dict(temperature=1.0, top_p=0.9, num_samples=2)):
        kwargs |= dict(max_new_tokens=10, progress=False, batch_size=2)
        plain = generate_responses(model, tokenizer, with_context, **kwargs)
        cad = generate_responses(
            model, tokenizer, with_context, cad_alpha=0.0, without_context=without, **kwargs
        )
        assert cad == plain
    assert decode_tokens(model, tokenizer, 0.0, 6) == decode_tokens(model, tokenizer, None, 6)


def test_cad_greedy_equals_a_hand_rolled_reference(tiny):
    model, tokenizer = tiny
    expected = reference_cad_greedy(model, tokenizer, 50.0, 6)
    assert decode_tokens(model, tokenizer, 50.0, 6) == expected
    assert decode_tokens(model, tokenizer, None, 6) != expected  # the contrast changes what is decoded


def write_prompts(path, *, contexts=True):
    rows = [
        {"id": f"q{i}", "prompt": q, **({"context": c} if contexts or i != 1 else {})}
        for i, (q, c) in enumerate(zip(QUESTIONS, CONTEXTS))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_sample_cad_alpha_writes_the_cad_replies(tmp_path, tiny_model_dir, tiny, cli):
    from mipo.engine.generation import generate_responses

    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "s.jsonl"
    code, _, err = cli(
        "sample",
        "--model",
        tiny_model_dir,
        "--prompts",
        prompts,
        "--out",
        out,
        "--cad-alpha",
        "1.5",
        "--temperature",
        "1",
        "--max-new-tokens",
        "6",
        "--no-progress",
        "--workers",
        "1",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with_context, without = pairs_of_conversations()
    kwargs = dict(temperature=1.0, max_new_tokens=6, progress=False, workers=1)
    cad = generate_responses(*tiny, with_context, cad_alpha=1.5, without_context=without, **kwargs)
    assert [r["responses"] for r in rows] == cad
    assert cad != generate_responses(*tiny, with_context, **kwargs)
    assert rows[0]["generation"]["cad_alpha"] == 1.5


@pytest.mark.parametrize(
    ("args", "contexts", "message"),
    [
        (["--cad-alpha", "-1"], True, "--cad-alpha must be >= 0"),
        (["--cad-alpha", "1"], False, "p.jsonl:2: field 'context'"),
        (["--cad-alpha", "1", "--no-with-context"], True, "--cad-alpha contrasts"),
    ],
)
def test_bad_cad_alpha_is_a_one_line_error_before_loading(
    tmp_path, cli, monkeypatch, args, contexts, message
):
    import mipo.engine.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mipo.engine.models, "load_model", no_loading)
    prompts = write_prompts(tmp_path / "p.jsonl", contexts=contexts)
    code, _, err = cli("sample", "--prompts", prompts, "--out", tmp_path / "o.jsonl", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    if not contexts:
        assert "context" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_eval_cad_alpha_decodes_the_model_with_cad_and_the_baseline_plainly(
    tmp_path, tiny_model_dir, tiny, cli, monkeypatch
):
    from mipo.engine.generation import generate_responses

    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))  # no baseline cached by another test
    out = tmp_path / "eval"
    code, _, err = cli(
        "eval",
        "--task",
        "prefs",
        "--limit",
        "2",
        "--model",
        tiny_model_dir,
        "--baseline",
        tiny_model_dir,
        "--cad-alpha",
        "50",
        "--temperature",
        "1",
        "--max-new-tokens",
        "5",
        "--seeds",
        "0",
        "--n-bootstrap",
        "100",
        "--workers",
        "1",
        "--out",
        out,
        "--no-progress",
    )
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    entry = results["tasks"]["prefs"]
    rows = {
        role: [json.loads(line) for line in (out / entry["examples"][role]).read_text().splitlines()]
        for role in ("model", "baseline")
    }
    prompts = [r["prompt"] for r in rows["model"]]
    without = [[m for m in p if m["role"] != "system"] for p in prompts]
    kwargs = dict(temperature=1.0, max_new_tokens=5, progress=False, workers=1, seed=0)
    cad = generate_responses(*tiny, prompts, cad_alpha=50.0, without_context=without, **kwargs)
    assert [r["response"] for r in rows["model"]] == [c[0] for c in cad]
    assert [r["response"] for r in rows["baseline"]] == [
        c[0] for c in generate_responses(*tiny, prompts, **kwargs)
    ]
    # with another user's context (the content effect), the model decodes with CAD on that context
    wrong_file = out / entry["context_effect"]["wrong_context"]["examples"]["model"]
    wrong = [json.loads(line) for line in wrong_file.read_text().splitlines()]
    prompts = [r["prompt"] for r in wrong]
    without = [[m for m in p if m["role"] != "system"] for p in prompts]
    cad = generate_responses(*tiny, prompts, cad_alpha=50.0, without_context=without, **kwargs)
    assert [r["response"] for r in wrong] == [c[0] for c in cad]


def test_eval_cad_alpha_on_items_without_context_is_refused_before_loading(tmp_path, cli, monkeypatch):
    import mipo.engine.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mipo.engine.models, "load_model", no_loading)
    mc_file = tmp_path / "mc.jsonl"
    mc_file.write_text(json.dumps({"question": "Sky?", "choices": ["red", "blue"], "answer": "B"}) + "\n")
    code, _, err = cli("eval", "--task", f"file:{mc_file}", "--cad-alpha", "1", "--out", tmp_path / "o")
    assert (
        code == 2 and len(err.strip().splitlines()) == 1 and "no context" in err and "--cad-alpha" in err
    ), err
    code, _, err = cli("eval", "--task", "prefs", "--cad-alpha", "-0.5", "--out", tmp_path / "o")
    assert code == 2 and "--cad-alpha must be >= 0" in err, err
