"""The PMI maths by hand, and batched sequence log-probs against a one-at-a-time computation."""

import math

import pytest

from mipo.engine.pmi import choose_other_prompts, logsumexp, pmi_from_logprobs


def test_pmi_by_hand():
    # π(y|x) = 0.5; under two other prompts π(y|x') = 0.1 and 0.3: the marginal is 0.2, PMI = log(0.5/0.2).
    own = math.log(0.5)
    others = [math.log(0.1), math.log(0.3)]
    assert pmi_from_logprobs([own], [others]) == [pytest.approx(math.log(2.5))]
    # A response equally likely under every prompt carries no information about its prompt.
    assert pmi_from_logprobs([-7.0], [[-7.0] * 8]) == [pytest.approx(0.0)]
    # K = 1 reduces to a plain log-ratio.
    assert pmi_from_logprobs([-3.0, -1.0], [[-5.0], [-1.5]]) == [pytest.approx(2.0), pytest.approx(0.5)]


def test_logsumexp_is_stable_for_long_responses():
    # Sequence log-probs of long responses are large and negative; exp() of them underflows to 0.
    values = [-1000.0, -1000.0 + math.log(3)]
    assert logsumexp(values) == pytest.approx(-1000.0 + math.log(4))
    assert pmi_from_logprobs([-990.0], [values]) == [pytest.approx(10.0 - math.log(2))]


def test_pmi_input_errors():
    with pytest.raises(ValueError, match="at least one other"):
        pmi_from_logprobs([0.0], [[]])
    with pytest.raises(ValueError, match="2 own"):
        pmi_from_logprobs([0.0, 1.0], [[0.0]])


def test_other_prompts_are_different_and_seeded():
    keys = ["a", "b", "a", "c", "d", "e"]
    chosen = choose_other_prompts(keys, 3, seed=5)
    assert chosen == choose_other_prompts(keys, 3, seed=5)
    for i, picks in enumerate(chosen):
        assert len(picks) == len(set(picks)) == 3
        assert all(keys[j] != keys[i] for j in picks)  # never itself nor a duplicate of it
    with pytest.raises(ValueError, match="only 5 distinct"):
        choose_other_prompts(keys, 5)


def test_sequence_logprobs_match_unbatched_computation(tiny_model_dir):
    import torch

    from mipo.engine.models import load_model
    from mipo.engine.scoring import encode_response, sequence_logprobs

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    conversations = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "About me: I like cats."}, {"role": "user", "content": "Name a pet."}],
        [{"role": "user", "content": "Count to three, please, slowly and carefully."}],
    ]
    responses = ["Hello there!", "A cat.", "One, two, three."]
    batched = sequence_logprobs(model, tokenizer, conversations, responses, batch_size=3)
    for conversation, response, value in zip(conversations, responses, batched):
        prompt_ids, response_ids = encode_response(tokenizer, conversation, response)
        assert tokenizer.decode(response_ids).startswith(response)  # the reply, then the end of turn
        ids = torch.tensor([prompt_ids + response_ids])
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        token_logp = logp.gather(-1, targets[:, None]).squeeze(-1)[len(prompt_ids) - 1 :]
        assert len(token_logp) == len(response_ids)
        assert value == pytest.approx(float(token_logp.sum()), abs=1e-3)
    # Batch size does not change the numbers (padding is masked).
    single = sequence_logprobs(model, tokenizer, conversations, responses, batch_size=1)
    assert single == pytest.approx(batched, abs=1e-3)


def test_context_pmi_by_hand_on_the_tiny_model(cli, tiny_model_dir, tmp_path, monkeypatch):
    # `mipo eval --task pmi --against context`: each reply's log π(y|x,c) − log π(y|x) under the reference,
    # recomputed here one sequence at a time from the examples file.
    import json

    import torch

    from mipo.engine.models import load_model
    from mipo.engine.scoring import encode_response

    monkeypatch.setenv("MIPO_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "prompts.jsonl"
    records = [
        {"id": "a", "prompt": "Name a fruit.", "context": "About me: I only eat apples."},
        {"id": "b", "prompt": "Name a color.", "context": "About me: my favourite color is blue."},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "o"
    code, stdout, err = cli(
        "eval", "--task", "pmi", "--against", "context", "--prompts", prompts, "--model", tiny_model_dir,
        "--max-new-tokens", "6", "--no-progress", "--n-bootstrap", "200", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    entry = json.loads((out / "results.json").read_text())["tasks"]["pmi"]
    assert entry["against"] == "context" and "context PMI" in entry["metric"]
    assert "pmi (context)" in stdout
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")

    def logp(conversation, response):
        prompt_ids, response_ids = encode_response(tokenizer, conversation, response)
        ids = torch.tensor([prompt_ids + response_ids])
        with torch.inference_mode():
            token_logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        picked = token_logp.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(prompt_ids) - 1 :]
        return float(picked.sum())

    rows = [json.loads(line) for line in (out / entry["examples"]["model"]).read_text().splitlines()]
    for record, row in zip(records, rows):
        with_context = [
            {"role": "system", "content": record["context"]},
            {"role": "user", "content": record["prompt"]},
        ]
        assert row["prompt"] == with_context
        own = logp(with_context, row["response"])
        bare = logp([{"role": "user", "content": record["prompt"]}], row["response"])
        assert row["logp"] == pytest.approx(own, abs=1e-3)
        assert row["logp_without_context"] == pytest.approx(bare, abs=1e-3)
        assert row["pmi"] == pytest.approx(own - bare, abs=1e-3) and row["score"] == row["pmi"]
    assert entry["model"]["mean"] == pytest.approx(sum(r["pmi"] for r in rows) / 2)

    # `mipo pmi --against context` is the same measurement
    code, _, err = cli(
        "pmi", "--against", "context", "--pairs", prompts, "--model", tiny_model_dir, "--max-new-tokens", "6",
        "--no-progress", "--n-bootstrap", "200", "--out", tmp_path / "p",
    )  # fmt: skip
    assert code == 0, err
    again = json.loads((tmp_path / "p" / "results.json").read_text())["tasks"]["pmi"]
    assert again["model"]["values"] == pytest.approx(entry["model"]["values"])


def test_context_pmi_refuses_items_without_a_context(cli, tiny_model_dir, tmp_path):
    import json

    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "Name a fruit.", "context": "I like apples."}, {"prompt": "Name a color."}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli(
        "eval", "--task", "pmi", "--against", "context", "--prompts", prompts, "--model", tiny_model_dir,
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(
            f"pmi --against context: {prompts}: line 2 has no 'context' (1 of 2 items lack one); context PMI "
            "needs the user's context on every item"
        )
    )
    assert not (tmp_path / "o").exists()  # refused before any model loads or anything is written


@pytest.mark.parametrize("attention, per_row", [("sdpa", 1024), ("eager", 1024), ("sdpa", 12)])
def test_replies_after_one_prompt_share_it_and_score_the_same(
    tiny_model_dir, monkeypatch, attention, per_row
):
    """PMI scores each reply under its own and K other prompts: a prompt is packed once with its replies
    (``mipo.engine.scoring.pack_replies``), and the log-probs are those of one (prompt, reply) per row."""
    from mipo.engine import scoring
    from mipo.engine.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    model.set_attn_implementation(attention)
    prompts = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "About me: I like cats."}, {"role": "user", "content": "Name a pet."}],
        [{"role": "user", "content": "Count to three, please, slowly and carefully."}],
    ]
    replies = ["Hello there!", "A cat.", "One, two, three.", "Four"]
    conversations = [p for p in prompts for _ in replies]  # every reply after every prompt
    responses = replies * len(prompts)
    monkeypatch.setattr(scoring, "REPLY_TOKENS_PER_ROW", per_row)  # 12: a prompt's replies over several rows
    rows = scoring.packed_rows(
        [scoring.encode_response(tokenizer, c, r) for c, r in zip(conversations, responses)]
    )
    assert len(rows) == (3 if per_row == 1024 else 6)
    shared = scoring.sequence_logprobs(model, tokenizer, conversations, responses, batch_size=2)
    monkeypatch.setattr(scoring, "_prompts_shareable", lambda *a: False)  # one (prompt, reply) per row
    separate = scoring.sequence_logprobs(model, tokenizer, conversations, responses, batch_size=2)
    assert shared == pytest.approx(separate, rel=1e-5, abs=1e-4)


def test_packed_replies_layout():
    from mipo.engine.scoring import pack_replies

    ids, positions, branch, starts = pack_replies([1, 2, 3], [[7, 8], [9], [5, 6]])
    assert ids == [1, 2, 3, 7, 8, 3, 9, 3, 5, 6]
    assert positions == [0, 1, 2, 3, 4, 2, 3, 2, 3, 4]
    assert branch == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert starts == [3, 6, 8]
