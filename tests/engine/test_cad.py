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


def reference_cad_greedy(
    model, tokenizer, alpha: float, steps: int, plausibility: float | None = None, lift_once: bool = False
) -> list[list[int]]:
    """CAD by hand: full forward passes over each prompt (with and without context) plus the tokens so far;
    ``steps`` tokens each, stop tokens included (the tiny random model's greedy reply stops at once). With
    ``plausibility`` τ, the argmax is taken over the tokens with p(v|x,c) >= τ max p(.|x,c) only; with
    ``lift_once``, a token already written keeps its contrast only where it is negative."""
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
            pmi = torch.log_softmax(a, -1) - torch.log_softmax(b, -1)
            if lift_once and new:
                pmi[new] = pmi[new].clamp(max=0.0)
            scores = torch.log_softmax(a, -1) + alpha * pmi
            if plausibility is not None:
                probs = torch.softmax(a, -1)
                scores[probs < plausibility * probs.max()] = float("-inf")
            new.append(int(scores.argmax()))
        out.append(new)
    return out


def decode_tokens(
    model,
    tokenizer,
    alpha: float | None,
    steps: int,
    plausibility: float | None = None,
    lift_once: bool = False,
    stop: int = -1,
) -> list[list[int]]:
    """The engine's decode loop on the same prompts (two rows per batch), with no stop token (or ``stop``)."""
    import torch

    from mipo.engine.generation import GenerationStats, _decode_batch, encode_conversations

    with_context, without = pairs_of_conversations()
    jobs = [
        (ids, 0, plain)
        for ids, plain in zip(
            encode_conversations(tokenizer, with_context), encode_conversations(tokenizer, without)
        )
    ]
    settings = dict(stops=torch.tensor([stop]), pad_id=tokenizer.pad_token_id, temperature=0, top_p=1.0)
    settings |= dict(max_new_tokens=steps, drop_finished=True, stats=GenerationStats(), cad_alpha=alpha)
    settings |= dict(cad_plausibility=plausibility, cad_lift_once=lift_once)
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


def test_cad_greedy_equals_transformers_classifier_free_guidance(tiny):
    """transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` scores ``g (log p(.|x,c) - log
    p(.|x')) + log p(.|x')``: with g = 1 + A and x' the prompt without its context that is ``(1 + A) log
    p(.|x,c) - A log p(.|x)``, CAD's score up to a constant per row (mipo's adds the log-normaliser of
    p(.|x,c)). Not the same floats, so the test claims what they agree on: the greedy tokens, prompt by
    prompt (transformers' negative branch takes one unpadded prompt), 8 steps each with no stop token."""
    import torch

    from mipo.engine.generation import encode_conversations

    model, tokenizer = tiny
    with_context, without = pairs_of_conversations()
    steps = 8
    for alpha in (0.5, 1.0, 50.0):
        ours = decode_tokens(model, tokenizer, alpha, steps)
        for row, (ids, plain) in enumerate(
            zip(encode_conversations(tokenizer, with_context), encode_conversations(tokenizer, without))
        ):
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                guidance_scale=1 + alpha,
                negative_prompt_ids=torch.tensor([plain]),
                do_sample=False,
                max_new_tokens=steps,
                eos_token_id=None,
                pad_token_id=tokenizer.pad_token_id,
            )
            theirs = out[0, len(ids) :].tolist()
            assert len(theirs) == steps and theirs == ours[row], (alpha, row)
    assert decode_tokens(model, tokenizer, 50.0, steps) != decode_tokens(model, tokenizer, None, steps)


def test_plausibility_keeps_only_tokens_near_the_top_probability_with_the_context():
    import math

    import torch

    from mipo.engine.cad import context_aware_logits

    # p(.|x,c) = (0.5, 0.3, 0.15, 0.05); without the context token 3 is far rarer still, so CAD lifts it.
    with_context = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    without = torch.tensor([[0.45, 0.3, 0.2499, 0.0001]]).log()
    plain_cad = context_aware_logits(with_context, without, 2.0)
    expected = with_context + 2.0 * (with_context - without)  # with_context is normalised already
    assert torch.allclose(plain_cad, expected) and int(plain_cad.argmax()) == 3
    assert context_aware_logits(with_context, without, 2.0, plausibility=None).equal(plain_cad)
    # τ = 0.5 keeps p >= 0.25: tokens 0 and 1, their CAD scores unchanged; the others can never be picked.
    constrained = context_aware_logits(with_context, without, 2.0, plausibility=0.5)
    assert constrained[0, :2].equal(plain_cad[0, :2])
    assert math.isinf(constrained[0, 2]) and math.isinf(constrained[0, 3]) and constrained[0, 3] < 0
    assert int(constrained.argmax()) == 0  # 0.5 * (0.5/0.45)^2 beats 0.3 * 1^2
    # τ = 0.1 keeps p >= 0.05: all four (token 3 sits exactly at the bound); τ = 1: only the top token.
    assert context_aware_logits(with_context, without, 2.0, plausibility=0.1).equal(plain_cad)
    top_only = context_aware_logits(with_context, without, 2.0, plausibility=1.0)
    assert torch.isinf(top_only).tolist() == [[False, True, True, True]]
    # A sample never leaves the head: pick_tokens at temperature 1 over many draws.
    from mipo.engine.token_choice import pick_tokens

    rows = constrained.expand(200, -1)
    picks = pick_tokens(rows, 1.0, 1.0, torch.linspace(0, 0.999, 200, dtype=torch.float64))
    assert set(picks.tolist()) == {0, 1}


def test_plausibility_on_the_tiny_model_equals_a_hand_rolled_reference(tiny):
    model, tokenizer = tiny
    for tau in (0.05, 0.3):
        expected = reference_cad_greedy(model, tokenizer, 50.0, 6, plausibility=tau)
        assert decode_tokens(model, tokenizer, 50.0, 6, plausibility=tau) == expected
    # τ = 1 leaves only the top token of p(.|x,c): CAD then decodes exactly the plain greedy reply.
    assert decode_tokens(model, tokenizer, 50.0, 6, plausibility=1.0) == decode_tokens(
        model, tokenizer, None, 6
    )
    assert decode_tokens(model, tokenizer, 50.0, 6) != decode_tokens(model, tokenizer, None, 6)


def test_lift_once_on_the_tiny_model_equals_a_hand_rolled_reference(tiny):
    # A = 50: the contrast decides every token, and plain CAD writes a lifted token again and again; lifting a
    # token only until it is written leaves no token twice where the lift chose it
    model, tokenizer = tiny
    plain = decode_tokens(model, tokenizer, 50.0, 8)
    once = decode_tokens(model, tokenizer, 50.0, 8, lift_once=True)
    assert once == reference_cad_greedy(model, tokenizer, 50.0, 8, lift_once=True)
    assert any(len(set(row)) < len(row) for row in plain)
    assert once != plain
    assert decode_tokens(model, tokenizer, 0.0, 6, lift_once=True) == decode_tokens(model, tokenizer, None, 6)
    # a row that stops early leaves its batch (the rows left keep their own written tokens): stopping at the
    # third token of the first reply cuts that reply and no other, and every other row is decoded as before
    stop = once[0][2]
    expected = [row[: row.index(stop)] if stop in row else row for row in once]
    assert len(expected[0]) == 2 and len(expected[1]) == 8
    assert decode_tokens(model, tokenizer, 50.0, 8, lift_once=True, stop=stop) == expected


def test_sample_cad_lift_once_writes_its_replies_and_is_in_the_fingerprint(
    tmp_path, tiny_model_dir, tiny, cli
):
    from mipo.engine.generation import generate_responses
    from mipo.sampling.replies import SampleConfig

    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "s.jsonl"
    flags = ["--model", tiny_model_dir, "--prompts", prompts, "--temperature", "0", "--max-new-tokens", "6"]
    code, _, err = cli(
        "sample", *flags, "--no-progress", "--cad-alpha", "50", "--cad-lift-once", "--out", out
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with_context, without = pairs_of_conversations()
    kwargs = dict(temperature=0.0, max_new_tokens=6, progress=False, cad_alpha=50.0, without_context=without)
    assert [r["responses"] for r in rows] == generate_responses(
        *tiny, with_context, cad_lift_once=True, **kwargs
    )
    assert rows[0]["generation"]["cad_lift_once"] is True

    def job(**changes):
        return SampleConfig(prompts=str(prompts), out=str(out), cad_alpha=3.0, **changes).fingerprint()

    assert job(cad_lift_once=True) != job()
    assert "cad_lift_once" not in job()  # runs from before the setting resume
    assert SampleConfig(prompts=str(prompts), out=str(out), cad_alpha=0.0).fingerprint()["cad_alpha"] == 0.0
    plain = generate_responses(*tiny, with_context, **kwargs)
    assert [r["responses"] for r in rows] != plain  # the flag reached the decode loop


def test_sample_cad_plausibility_writes_its_replies_and_is_in_the_fingerprint(
    tmp_path, tiny_model_dir, tiny, cli
):
    from mipo.engine.generation import generate_responses

    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "s.jsonl"
    flags = ["--model", tiny_model_dir, "--prompts", prompts, "--temperature", "1", "--max-new-tokens", "6"]
    flags += ["--no-progress", "--workers", "1", "--cad-alpha", "3"]
    code, _, err = cli("sample", *flags, "--out", out, "--cad-plausibility", "0.2")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with_context, without = pairs_of_conversations()
    kwargs = dict(temperature=1.0, max_new_tokens=6, progress=False, workers=1, cad_alpha=3.0)
    kwargs["without_context"] = without
    assert [r["responses"] for r in rows] == generate_responses(
        *tiny, with_context, cad_plausibility=0.2, **kwargs
    )
    assert rows[0]["generation"]["cad_plausibility"] == 0.2
    from mipo.sampling.replies import SampleConfig

    def job(**changes):
        return SampleConfig(prompts=str(prompts), out=str(out), cad_alpha=3.0, **changes).fingerprint()

    assert job(cad_plausibility=0.2) != job(cad_plausibility=0.5) != job()
    assert "cad_plausibility" not in job()  # runs from before the setting resume


def test_eval_passes_plausibility_to_the_engine_for_the_model_only():
    from types import SimpleNamespace

    from mipo.evaluation.answers import generate
    from mipo.prompts.records import PromptRecord

    calls = []

    class Engine:
        def generate(self, conversations, **kwargs):
            calls.append(kwargs)
            return [["reply"] for _ in conversations]

    settings = dict(cad_alpha=1.0, cad_plausibility=0.1, context_mode="system", sampling_temperature=0.0)
    settings["cad_lift_once"] = True
    config = SimpleNamespace(**settings, top_p=1.0, max_new_tokens=4, batch_size=2, workers=1)
    item = PromptRecord(id="a", prompt="Q?", context="Be brief.")
    generate(config, Engine(), [item.prompt], 0, None, [item])
    generate(config, Engine(), [item.prompt], 0, None, None)  # the baseline: no CAD at all
    assert calls[0]["cad_alpha"] == 1.0 and calls[0]["cad_plausibility"] == 0.1
    assert calls[0]["cad_lift_once"] is True
    assert calls[0]["without_context"] == [[{"role": "user", "content": "Q?"}]]
    assert not {"cad_alpha", "cad_plausibility", "cad_lift_once"} & set(calls[1])


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        (
            "sample",
            ["--cad-alpha", "1", "--cad-plausibility", "0"],
            "--cad-plausibility must be in (0, 1], got 0.0",
        ),
        ("sample", ["--cad-alpha", "1", "--cad-plausibility", "1.5"], "--cad-plausibility must be in (0, 1]"),
        ("sample", ["--cad-plausibility", "0.1"], "--cad-plausibility constrains context-aware decoding"),
        ("eval", ["--cad-alpha", "1", "--cad-plausibility", "-0.1"], "--cad-plausibility must be in (0, 1]"),
        ("eval", ["--cad-plausibility", "0.5"], "add --cad-alpha"),
        ("pairs", ["--strategy", "cad", "--cad-plausibility", "2"], "--cad-plausibility must be in (0, 1]"),
        ("sample", ["--cad-lift-once"], "--cad-lift-once changes context-aware decoding: add --cad-alpha A"),
        ("eval", ["--cad-lift-once"], "--cad-lift-once changes context-aware decoding: add --cad-alpha A"),
        ("pairs", ["--cad-lift-once"], "--cad-lift-once is a setting of --strategy cad, not 'random'"),
    ],
)
def test_bad_cad_decoding_settings_are_one_line_errors_before_loading(
    tmp_path, cli, monkeypatch, command, args, message
):
    import mipo.engine.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mipo.engine.models, "load_model", no_loading)
    prompts = write_prompts(tmp_path / "p.jsonl")
    source = ["--task", "prefs"] if command == "eval" else ["--prompts", prompts]
    out = tmp_path / ("o" if command == "eval" else "o.jsonl")
    code, _, err = cli(command, *source, "--out", out, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()
