"""The generation engine: greedy output equals ``model.generate``; sampling is seeded, ordered and exact."""

from __future__ import annotations

import importlib.util

import pytest

from mipo.core.errors import MipoError

QUESTIONS = [
    "What is 2+2?",
    "Write a very long story about a dragon who lives in a castle by the sea.",
    "Hi",
    "Name three colors of the rainbow, please.",
    "Why is the sky blue?",
]


def conversations(questions=QUESTIONS):
    return [[{"role": "user", "content": q}] for q in questions]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from mipo.engine.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


def reference_greedy(model, tokenizer, convs, max_new_tokens):
    import torch

    from mipo.engine.generation import encode_conversations, stop_token_ids

    out = []
    for ids in encode_conversations(tokenizer, convs):
        generated = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_token_ids(model, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        out.append(tokenizer.decode(generated[0, len(ids) :], skip_special_tokens=True).strip())
    return out


def test_greedy_equals_model_generate_on_the_tiny_model(tiny):
    from mipo.engine.generation import GenerationStats, generate_responses

    model, tokenizer = tiny
    stats = GenerationStats()
    ours = generate_responses(
        model,
        tokenizer,
        conversations(),
        temperature=0,
        max_new_tokens=12,
        batch_size=3,
        progress=False,
        stats=stats,
    )
    assert [r[0] for r in ours] == reference_greedy(model, tokenizer, conversations(), 12)
    assert stats.prompts == len(QUESTIONS) and 0 < stats.new_tokens <= 12 * len(QUESTIONS)
    assert stats.padding_tokens > 0  # batches of 3 over 5 prompts of different lengths


def test_sampling_is_seeded_and_keeps_input_order(tiny):
    from mipo.engine.generation import generate_responses

    model, tokenizer = tiny
    kwargs = dict(temperature=1.0, top_p=0.9, max_new_tokens=8, num_samples=2, progress=False, batch_size=4)
    first = generate_responses(model, tokenizer, conversations(), seed=1, **kwargs)
    assert first == generate_responses(model, tokenizer, conversations(), seed=1, **kwargs)
    assert first != generate_responses(model, tokenizer, conversations(), seed=2, **kwargs)
    assert [len(r) for r in first] == [2] * len(QUESTIONS)
    # Order: each prompt's greedy answer is the same alone as in a batch.
    batched = generate_responses(
        model, tokenizer, conversations(), temperature=0, max_new_tokens=6, progress=False
    )
    for k, q in enumerate(QUESTIONS):
        alone = generate_responses(
            model, tokenizer, conversations([q]), temperature=0, max_new_tokens=6, progress=False
        )
        assert alone == [batched[k]]


def test_a_reply_depends_on_its_prompt_and_seed_only_not_on_batches_calls_or_workers(tiny):
    # What `mipo eval` (saving batch by batch), `mipo pairs` (chunks) and decode workers rely on.
    from mipo.engine.generation import generate_responses

    model, tokenizer = tiny
    kwargs = dict(temperature=0.1, top_p=0.9, max_new_tokens=8, num_samples=2, progress=False, seed=5)
    whole = generate_responses(model, tokenizer, conversations(), batch_size=5, workers=1, **kwargs)
    assert generate_responses(model, tokenizer, conversations(), batch_size=2, workers=2, **kwargs) == whole
    assert generate_responses(model, tokenizer, conversations(), batch_size=1, workers=3, **kwargs) == whole
    pieces = [
        replies
        for q in reversed(QUESTIONS)
        for replies in generate_responses(model, tokenizer, conversations([q]), workers=1, **kwargs)
    ]
    assert pieces[::-1] == whole
    assert len({r for replies in whole for r in replies}) > len(QUESTIONS)  # the two samples differ


def test_top_p_samples_only_the_nucleus_with_and_without_the_top_k_shortcut(monkeypatch):
    import torch

    import mipo.engine.token_choice as token_choice

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).repeat(400, 1)
    logits = probs.log()
    for k in (4, 1):  # k=1 leaves the nucleus outside the candidates: the full sort must take over
        monkeypatch.setattr(token_choice, "TOP_K_CANDIDATES", k)
        uniforms = torch.rand(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        picked = token_choice.pick_tokens(logits, 1.0, 0.7, uniforms)
        counts = torch.bincount(picked, minlength=4).tolist()
        assert counts[2] == counts[3] == 0 and counts[0] > counts[1] > 0  # nucleus {0, 1}: mass 0.8 >= 0.7
        assert 0.55 < counts[0] / 400 < 0.7  # 0.5 / 0.8 = 0.625 of the draws
    assert token_choice.pick_tokens(logits[:2], 0.0, 0.9, None).tolist() == [0, 0]
    # the inverse CDF at the edges: a draw of 0 picks the most likely token, one just under 1 the last kept
    edges = torch.tensor([0.0, 1.0 - 1e-16], dtype=torch.float64)
    assert token_choice.pick_tokens(logits[:2], 1.0, 0.7, edges).tolist() == [0, 1]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_is_a_clear_error():
    from mipo.engine.generation import generate_responses

    with pytest.raises(MipoError, match="backend 'vllm' needs vLLM, which is not installed: pip install"):
        generate_responses("some/model", None, conversations(), backend="vllm")


@pytest.mark.slow
def test_greedy_equals_model_generate_on_smollm2():
    from mipo.engine.generation import generate_responses
    from mipo.engine.models import load_model

    model, tokenizer = load_model("smollm2-135m", device="cpu")
    ours = generate_responses(
        model, tokenizer, conversations(), temperature=0, max_new_tokens=48, progress=False
    )
    assert [r[0] for r in ours] == reference_greedy(model, tokenizer, conversations(), 48)
