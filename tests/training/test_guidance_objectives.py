"""The guidance-target objectives (issue 25): CCA and token-level guidance distillation. The losses against
numbers derived by hand, ``mipo train --objective cca|guidance`` for a step on the tiny model (LoRA and full),
and their bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mipo.engine.cad import token_kl
from mipo.training.objectives._contrastive import cca_loss
from mipo.training.objectives._guidance import (
    context_loop_mask,
    decision_weighted_mean,
    guidance_loss,
    repeated_ngram_mask,
    token_pmi,
    unlikelihood_loss,
)

LN2, LN3 = math.log(2), math.log(3)


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_cca_loss_raises_the_reply_under_its_prompt_and_lowers_it_under_the_negative_one():
    # summed log-probs of y+ under (x, x'): the policy's and the reference's, for 2 rows
    policy = torch.tensor([[-10.0, -12.0], [-8.0, -9.0]])
    reference = torch.tensor([[-11.0, -11.0], [-8.0, -10.0]])
    losses, chosen, rejected = cca_loss(policy, reference, beta=0.5, negative_weight=2.0)
    # row 1: D(y+|x) = 1, D(y+|x') = -1: -log σ(0.5) - 2 log σ(0.5) = 3 softplus(-0.5)
    # row 2: D(y+|x) = 0, D(y+|x') = 1: -log σ(0) - 2 log σ(-0.5) = log 2 + 2 softplus(0.5)
    expected = [3 * softplus(-0.5), LN2 + 2 * softplus(0.5)]
    assert expected == pytest.approx([1.422231, 2.641301], abs=1e-6)
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert chosen.tolist() == [0.5, 0.0] and rejected.tolist() == [-0.5, 0.5]  # β D, DPO's reward names
    # at the start (policy = reference) every row costs (1 + λ) log 2
    start, _, _ = cca_loss(reference, reference, beta=0.5, negative_weight=2.0)
    assert start.tolist() == pytest.approx([3 * LN2, 3 * LN2], abs=1e-6)


# Two reply positions over a 2-token vocabulary: the reference's logits with the context (x) and without (x'),
# and the policy's. Position 1: p(.|x) = (1/2, 1/2), p(.|x') = (3/4, 1/4); position 2: (3/4, 1/4) and (1/2, 1/2).
WITH_CONTEXT = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
WITHOUT = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
POLICY = torch.tensor([[LN2, 0.0], [LN3, 0.0]])  # (2/3, 1/3) and (3/4, 1/4)


def test_guidance_distils_cads_token_distribution_by_hand():
    # teacher q ∝ p(.|x)^2 / p(.|x') at A = 1: position 1 ∝ (1/4 / 3/4, 1/4 / 1/4) = (1/4, 3/4);
    # position 2 ∝ (9/16 / 1/2, 1/16 / 1/2) = (9/10, 1/10)
    kl_1 = 0.25 * math.log(0.25 / (2 / 3)) + 0.75 * math.log(
        0.75 / (1 / 3)
    )  # the teacher's top (2) != the policy's (1)
    kl_2 = 0.9 * math.log(0.9 / 0.75) + 0.1 * math.log(0.1 / 0.25)  # both pick token 1
    assert (kl_1, kl_2) == pytest.approx((0.362990, 0.072460), abs=1e-6)
    loss, kl, teacher_top = guidance_loss(POLICY, WITH_CONTEXT, WITHOUT, alpha=1.0)
    assert kl.tolist() == pytest.approx([kl_1, kl_2], abs=1e-6)
    assert teacher_top.tolist() == [1, 0]  # the policy's are [0, 0]: position 1 is a decision
    assert loss.item() == pytest.approx((kl_1 + kl_2) / 2, abs=1e-6)  # the mean per token
    # decision_weight 5: the decision weighs 5, the other 1, and the sum is divided by the weights' sum (6)
    weighted, _, _ = guidance_loss(POLICY, WITH_CONTEXT, WITHOUT, alpha=1.0, decision_weight=5.0)
    assert weighted.item() == pytest.approx((5 * kl_1 + kl_2) / 6, abs=1e-6)
    # A = 0: the teacher is the reference with the context itself, (1/2, 1/2) and (3/4, 1/4)
    _, plain, _ = guidance_loss(POLICY, WITH_CONTEXT, WITHOUT, alpha=0.0)
    kl_plain_1 = 0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))
    assert plain.tolist() == pytest.approx([kl_plain_1, 0.0], abs=1e-6)
    # plausibility 1/2: at position 2 token 2 has p(.|x) = 1/4 < 1/2 x 3/4, so the teacher is (1, 0) there and
    # the KL is log(1 / 3/4); at position 1 both tokens have 1/2 and the teacher is unchanged
    _, masked, _ = guidance_loss(POLICY, WITH_CONTEXT, WITHOUT, alpha=1.0, plausibility=0.5)
    assert masked.tolist() == pytest.approx([kl_1, math.log(4 / 3)], abs=1e-6)


def test_the_lift_once_teacher_by_hand():
    from mipo.engine.cad import written_before

    # position 1: p(.|x) = (1/2, 1/2), p(.|x') = (3/4, 1/4), so the context lifts token 1 (PMI log 2) and lowers
    # token 0 (log 2/3). Once token 1 is written its lift is gone and the teacher is p(.|x) with token 0 still
    # lowered: ∝ (1/2 x 2/3, 1/2) = (2/5, 3/5); a written token 0 keeps its negative contrast: (1/4, 3/4) as before
    written = torch.tensor([[False, True], [False, False]])
    _, kl, _ = guidance_loss(POLICY, WITH_CONTEXT, WITHOUT, alpha=1.0, written=written)
    kl_once = 0.4 * math.log(0.4 / (2 / 3)) + 0.6 * math.log(0.6 / (1 / 3))
    kl_2 = 0.9 * math.log(0.9 / 0.75) + 0.1 * math.log(0.1 / 0.25)  # position 2 as without ``written``
    assert kl.tolist() == pytest.approx([kl_once, kl_2], abs=1e-6)
    _, lowered, _ = guidance_loss(POLICY, WITH_CONTEXT, WITHOUT, alpha=1.0, written=~written)
    _, plain, _ = guidance_loss(POLICY, WITH_CONTEXT, WITHOUT, alpha=1.0)
    assert lowered[0].item() == pytest.approx(plain[0].item(), abs=1e-6)
    # position 2: p(.|x) = (3/4, 1/4), p(.|x') = (1/2, 1/2); both written: token 0's lift (log 3/2) goes and
    # token 1's lowering (log 1/2) stays, so the teacher is ∝ (3/4, 1/4 x 1/2) = (6/7, 1/7)
    kl_lowered = 6 / 7 * math.log((6 / 7) / 0.75) + 1 / 7 * math.log((1 / 7) / 0.25)
    assert lowered[1].item() == pytest.approx(kl_lowered, abs=1e-6)
    # the tokens written before each position, two replies laid end to end (4 and 2 tokens)
    assert written_before(torch.tensor([2, 0, 2, 1, 1, 1]), [4, 2], 3).int().tolist() == [
        [0, 0, 0], [0, 0, 1], [1, 0, 1], [1, 0, 1],  # reply 1: nothing, then 2, then 2 and 0
        [0, 0, 0], [0, 1, 0],  # reply 2 starts afresh
    ]  # fmt: skip


def test_the_preservation_kl_and_the_weighted_mean_by_hand():
    # KL((1/2, 1/2) || (3/4, 1/4)) = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3)
    base = torch.log_softmax(torch.tensor([[0.0, 0.0]]), dim=-1)
    assert token_kl(base, torch.tensor([[LN3, 0.0]])).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    values = torch.tensor([1.0, 2.0, 4.0])
    assert decision_weighted_mean(values, torch.tensor([False, False, False]), 5.0).item() == pytest.approx(
        7 / 3
    )
    assert decision_weighted_mean(values, torch.tensor([False, True, False]), 3.0).item() == pytest.approx(
        11 / 5
    )


def test_the_unlikelihood_of_repeated_ngrams_by_hand():
    # the second "1 2 3 4" repeats the first: its 4 tokens; "5" is new
    assert repeated_ngram_mask([1, 2, 3, 4, 1, 2, 3, 4, 5]) == [False] * 4 + [True] * 4 + [False]
    # "7 7 7 7 7": the 4-gram at 1 repeats the one at 0, so tokens 1-4 (the first 7 was new)
    assert repeated_ngram_mask([7, 7, 7, 7, 7]) == [False] + [True] * 4
    assert repeated_ngram_mask([1, 2, 3, 1, 2, 3]) == [False] * 6  # no 4-gram twice
    assert repeated_ngram_mask([1, 2, 1, 2, 1], n=2) == [False, False, True, True, True]
    assert repeated_ngram_mask([1, 2]) == [False, False]
    # p = (3/4, 1/4): pushing token 0 down costs -log(1 - 3/4) = log 4, token 1 -log(3/4)
    logits = torch.tensor([[LN3, 0.0], [LN3, 0.0], [LN3, 0.0]])
    targets = torch.tensor([0, 1, 0])
    mask = torch.tensor([True, True, False])
    assert unlikelihood_loss(logits, targets, mask).item() == pytest.approx(
        (math.log(4) + math.log(4 / 3)) / 2, abs=1e-6
    )
    assert unlikelihood_loss(logits, targets, torch.zeros(3, dtype=torch.bool)).item() == 0.0
    # a token of probability 1 stays finite
    assert math.isfinite(
        unlikelihood_loss(torch.tensor([[50.0, -50.0]]), torch.tensor([0]), torch.tensor([True])).item()
    )


def test_only_the_repeats_the_context_lifts_by_hand():
    # WITH_CONTEXT / WITHOUT: at position 1 the context lifts token 1 (PMI log(1/2 / 1/4) = log 2) and lowers
    # token 0 (log(1/2 / 3/4) = log 2/3); at position 2 it lifts token 0 (log 3/2) and lowers token 1 (log 1/2)
    pmi = token_pmi(WITH_CONTEXT, WITHOUT, torch.tensor([1, 1]))
    assert pmi.tolist() == pytest.approx([LN2, math.log(0.5)], abs=1e-6)
    assert token_pmi(WITH_CONTEXT, WITHOUT, torch.tensor([0, 0])).tolist() == pytest.approx(
        [math.log(2 / 3), math.log(1.5)], abs=1e-6
    )
    # a repeat is kept only where its PMI is above the threshold; a lifted token that is no repeat is not
    repeats = [True, True, False, True]
    values = [LN2, math.log(0.5), 3.0, 0.5]
    assert context_loop_mask(repeats, values, 0.0) == [True, False, False, True]
    assert context_loop_mask(repeats, values, 0.6) == [True, False, False, False]
    assert context_loop_mask(repeats, values, 1.0) == [False] * 4
    with pytest.raises(ValueError):
        context_loop_mask([True], [0.1, 0.2], 0.0)  # one PMI per token


def test_each_prompts_negative_is_one_without_a_context_where_the_pairs_hold_one():
    from datasets import Dataset

    from mipo.training.objectives._guidance_trainer import prompts_and_negatives

    # prompt [1] has an other-context row first, then an incomplete one; [2] only an other-context row
    dataset = Dataset.from_dict(
        {
            "prompt_ids": [[1], [2], [1], [1]],
            "negative_prompt_ids": [[7, 1], [8, 2], [1], [9, 1]],
            "preserve": [0.0, 0.0, 1.0, 1.0],
        }
    )
    assert prompts_and_negatives(dataset) == [([1], [1]), ([2], [8, 2])]
    # pairs without the column (other objectives' datasets): the first row's negative prompt
    assert prompts_and_negatives(dataset.remove_columns("preserve")) == [([1], [7, 1]), ([2], [8, 2])]


def test_the_preservation_term_counts_only_pairs_whose_negative_prompt_has_no_context():
    from mipo.training.objectives._guidance_trainer import preserved_mean
    from mipo.training.objectives.guidance import pairs_with_preserve_weights

    # two pairs, 2 and 3 reply tokens (the completion mask's first column never predicts a reply token)
    group = {"completion_mask": torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 0]])}
    values = torch.tensor([1.0, 3.0, 10.0, 20.0, 30.0])
    assert preserved_mean(values, torch.tensor([1.0, 0.0]), group).item() == pytest.approx(2.0)
    assert preserved_mean(values, torch.tensor([0.0, 1.0]), group).item() == pytest.approx(20.0)
    assert preserved_mean(values, torch.tensor([1.0, 1.0]), group).item() == pytest.approx(64 / 5)
    assert preserved_mean(values, torch.tensor([0.0, 0.0]), group).item() == 0.0
    rows = pairs_with_preserve_weights([{"negative_context": True}, {"negative_context": False}, {}])
    assert rows == [{"preserve": 0.0}, {"preserve": 1.0}, {"preserve": 1.0}]  # absent: as before the field


def test_reply_logits_are_those_of_the_full_forward(tiny_model_dir):
    # the trainer projects only the columns from the first that predicts a reply token, then keeps those that do
    from transformers import AutoModelForCausalLM

    from mipo.training.objectives._guidance_trainer import reply_logits, sequence_groups, split_replies

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(0, 1000, (4, 12))
    completion = torch.zeros_like(ids)
    completion[:, 7:] = 1
    attention = torch.ones_like(ids)
    completion[1, 10:] = attention[1, 10:] = 0  # a shorter reply, then padding
    completion[3, :8] = completion[3, 11:] = attention[3, 11:] = 0  # a longer prompt, a shorter reply
    inputs = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}
    groups = sequence_groups(inputs, 2)  # rows 0, 2 and rows 1, 3
    with torch.no_grad():
        full = model(input_ids=ids).logits
        first, second = split_replies(reply_logits(model, groups))
    torch.testing.assert_close(first, torch.cat([full[0, 6:11], full[2, 6:11]]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(second, torch.cat([full[1, 6:9], full[3, 7:10]]), atol=1e-4, rtol=1e-4)


# ---- mipo train --objective cca|guidance on the tiny model ----

ONE_STEP = ["--batch-size", "8", "--max-length", "256", "--max_steps", "1"]


def conversational_pair(prompt: str, negative: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "system", "content": prompt[0]}, {"role": "user", "content": prompt[1]}],
        "negative_prompt": [{"role": "user", "content": negative}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def write_pairs(
    path: Path,
    count: int = 8,
    *,
    negative: bool = True,
    generation: dict | None = None,
    negative_context: bool | None = None,
) -> Path:
    """``incomplete`` pairs: x = a context and a question, x' = the question alone (``negative_context`` is
    written as given, True for the row's negative prompt carrying a context)."""
    with path.open("w") as f:
        for i in range(count):
            question = f"What pet should I get, number {i}?"
            row = conversational_pair(
                (f"I like cats {i}.", question), question, f"A cat, since you like cats {i}.", f"A dog {i}."
            )
            if not negative:
                del row["negative_prompt"]
            if negative_context is not None:
                row["negative_context"] = negative_context
            f.write(json.dumps({"id": i, **row, **({"generation": generation} if generation else {})}) + "\n")
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_once(cli, tmp_path: Path, model: Path, objective: str, *extra: str) -> tuple[Path, dict]:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    args = ["train", "--model", model, "--pairs", pairs, "--out", out, "--objective", objective, *ONE_STEP]
    code, stdout, err = cli(*args, *extra)
    assert code == 0, err
    assert "1 steps" in stdout
    weights = "model.safetensors" if "--full" in extra else "adapter_model.safetensors"
    for name in (weights, "tokenizer_config.json", "curves.png", "mipo_run.json", "train_summary.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    [metrics] = rows(out / "metrics.jsonl")
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 1 and summary["final_loss"] == metrics["loss"]
    return out, metrics


@pytest.mark.parametrize("extra", [[], ["--full"]])
def test_cca_trains_a_step_with_lora_and_full_weights(tmp_path, tiny_model_dir, cli, extra):
    out, metrics = train_once(cli, tmp_path, tiny_model_dir, "cca", *extra, "--negative_weight", "3")
    # step 1: the policy is the reference (LoRA: B = 0; full: the frozen copy), so D = 0 and the loss is (1 + λ) log 2
    assert metrics["loss"] == pytest.approx(4 * LN2, abs=1e-4)
    assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies"):
        assert math.isfinite(metrics[key]), key
    assert metrics["num_tokens"] > 0
    used = json.loads((out / "train_config.json").read_text())["cca_config"]
    assert (used["beta"], used["negative_weight"], used["max_length"]) == (0.1, 3.0, 256)


def full_pass_reply_logits(model, prompt_ids: list[int], reply_ids: list[int]) -> torch.Tensor:
    """The (len(reply), V) next-token logits at the positions that predict the reply's tokens, from one
    full forward pass over the prompt and the reply (the reference the trainer's batched passes are held to)."""
    with torch.no_grad():
        full = model(input_ids=torch.tensor([prompt_ids + reply_ids])).logits[0]
    return full[len(prompt_ids) - 1 : len(prompt_ids) + len(reply_ids) - 1]


def base_guidance_kl(model_dir: Path, pairs: Path, alpha: float, lift_once: bool = False) -> float:
    """The mean per-token KL(CAD teacher || the model itself) over the chosen replies, from full forward passes
    one reply at a time; ``lift_once``: no lift for a token the reply has already written."""
    from mipo.engine.cad import cad_log_probs, written_before
    from mipo.engine.models import load_model
    from mipo.engine.scoring import encode_response

    model, tokenizer = load_model(str(model_dir), device="cpu")
    kls = []
    for pair in rows(pairs):
        reply = pair["chosen"][0]["content"]
        logits = []
        for prompt in (pair["prompt"], pair["negative_prompt"]):
            prompt_ids, reply_ids = encode_response(tokenizer, prompt, reply)
            logits.append(full_pass_reply_logits(model, prompt_ids, reply_ids))
        written = written_before(torch.tensor(reply_ids), [len(reply_ids)], logits[0].shape[-1])
        teacher = cad_log_probs(logits[0], logits[1], alpha, written=written if lift_once else None)
        kls.append(token_kl(teacher, logits[0]))
    return torch.cat(kls).mean().item()


def test_guidance_trains_a_step_with_lora_from_the_teacher_of_the_reference(tmp_path, tiny_model_dir, cli):
    out, metrics = train_once(cli, tmp_path, tiny_model_dir, "guidance", "--cad-alpha", "2")
    # step 1: the policy is the base model, so the loss is the mean per-token KL(teacher || base), A = 2
    expected = base_guidance_kl(tiny_model_dir, tmp_path / "pairs.jsonl", alpha=2.0)
    assert expected > 1e-4
    assert metrics["loss"] == pytest.approx(expected, rel=1e-3)
    assert metrics["kl"] == pytest.approx(expected, rel=1e-3)
    assert metrics["decisions"] == 0.0  # the base model takes none of CAD's decisions
    assert "preserve_kl" not in metrics and metrics["num_tokens"] > 0
    used = json.loads((out / "train_config.json").read_text())["guidance_config"]
    assert (used["cad_alpha"], used["preserve"], used["decision_weight"]) == (2.0, 0.0, 1.0)


def test_guidance_with_the_lift_once_teacher(tmp_path, tiny_model_dir, cli, monkeypatch):
    # step 1: the loss is the base model's KL to the teacher that lifts each token only until it is written,
    # reply by reply. The tiny random model spreads its mass over the whole vocabulary, so this teacher is
    # within 1e-4 of the plain one: the written tokens the loss receives are checked instead (by hand below)
    import mipo.training.objectives._guidance_trainer as trainer

    received, trainer_loss = [], trainer.guidance_loss

    def recording_loss(*args):
        received.append(args[-1])  # ``written``
        return trainer_loss(*args)

    monkeypatch.setattr(trainer, "guidance_loss", recording_loss)
    out, metrics = train_once(
        cli, tmp_path, tiny_model_dir, "guidance", "--cad-alpha", "2", "--cad_lift_once", "true"
    )
    expected = base_guidance_kl(tiny_model_dir, tmp_path / "pairs.jsonl", alpha=2.0, lift_once=True)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-3)
    [written] = received
    replies = [r["chosen"][0]["content"] for r in rows(tmp_path / "pairs.jsonl")]
    # one row per reply position, the vocabulary wide; each reply's first position has nothing written
    assert written.dtype == torch.bool and written.shape[0] > len(replies) and written.any()
    assert written.sum(dim=-1).min() == 0
    assert json.loads((out / "train_config.json").read_text())["guidance_config"]["cad_lift_once"] is True


def test_the_written_tokens_follow_the_reply_positions_of_a_padded_batch():
    from mipo.training.objectives._guidance_trainer import written_in_replies

    # row 1: prompt 5 6, reply 7 8 7, a pad; row 2: prompt 5, reply 9 9, pads. The positions predicting a
    # reply token, row by row (as reply_logits orders them), have written: {}, {7}, {7, 8}; {}, {9}
    group = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 7, 0], [5, 9, 9, 0, 0, 0]]),
        "completion_mask": torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]]),
    }
    written = written_in_replies(group, 10)
    assert [row.nonzero()[:, 0].tolist() for row in written] == [[], [7], [7, 8], [], [9]]


def test_guidance_with_full_weights_and_the_preservation_term(tmp_path, tiny_model_dir, cli):
    # --full: the teacher comes from a frozen copy of the starting model; at step 1 the policy equals it, so the
    # preservation term is 0; A = 0 makes the teacher that same model, so the whole loss is 0
    out, metrics = train_once(
        cli, tmp_path, tiny_model_dir, "guidance", "--full", "--cad-alpha", "0", "--preserve", "1",
        "--decision_weight", "5",
    )  # fmt: skip
    assert metrics["loss"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["preserve_kl"] == pytest.approx(0.0, abs=1e-5)
    used = json.loads((out / "train_config.json").read_text())["guidance_config"]
    assert (used["cad_alpha"], used["preserve"], used["decision_weight"]) == (0.0, 1.0, 5.0)


def own_repeats(
    model_dir: Path, pairs: Path, max_new_tokens: int, n: int
) -> list[tuple[list[int], list[int], list[int]]]:
    """The tiny model's greedy replies (its end of turn included) to the pairs' prompts, one per distinct
    prompt, written apart from the trainer with ``mipo.engine.generation``'s model loader and plain
    ``generate`` one prompt at a time; kept where an n-gram repeats, with the prompt's and the negative
    prompt's token ids."""
    from mipo.engine.models import load_model
    from mipo.engine.stops import stop_token_ids

    model, tokenizer = load_model(str(model_dir), device="cpu")
    ends = stop_token_ids(model, tokenizer)
    kept, seen = [], set()
    for pair in rows(pairs):
        ids = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(ids, add_special_tokens=False)["input_ids"]
        if tuple(prompt_ids) in seen:
            continue
        seen.add(tuple(prompt_ids))
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=ends, pad_token_id=tokenizer.pad_token_id,
            )[0, len(prompt_ids):].tolist()  # fmt: skip
        end = next((i for i, t in enumerate(out) if t in ends), len(out) - 1)
        reply = out[: end + 1]
        if any(repeated_ngram_mask(reply, n)):
            negative = tokenizer.apply_chat_template(
                pair["negative_prompt"], add_generation_prompt=True, tokenize=False
            )
            kept.append((prompt_ids, reply, tokenizer(negative, add_special_tokens=False)["input_ids"]))
    return kept


def test_unlikelihood_pushes_down_the_repeats_of_the_policys_own_greedy_replies(
    tmp_path, tiny_model_dir, cli
):
    # the tiny random model loops: at step 1 (the policy is the base) its greedy replies to the 8 prompts are
    # the base's, so the unlikelihood is that of the base's repeated 4-grams, over the first 8 of them
    _, metrics = train_once(
        cli, tmp_path, tiny_model_dir, "guidance", "--cad-alpha", "1", "--unlikelihood", "2",
        "--unlikelihood_tokens", "24", "--unlikelihood_ngram", "3",
    )  # fmt: skip
    repeating = own_repeats(tiny_model_dir, tmp_path / "pairs.jsonl", 24, n=3)
    assert repeating, "the tiny model's greedy replies should repeat a 4-gram"
    assert metrics["own_repeating"] == pytest.approx(len(repeating) / 8)
    from mipo.engine.models import load_model

    model, _ = load_model(str(tiny_model_dir), device="cpu")
    logits, targets, mask = [], [], []
    for prompt_ids, reply, _ in repeating[:8]:
        logits.append(full_pass_reply_logits(model, prompt_ids, reply))
        targets += reply
        mask += repeated_ngram_mask(reply, 3)
    expected = unlikelihood_loss(torch.cat(logits), torch.tensor(targets), torch.tensor(mask)).item()
    assert expected > 0
    assert metrics["unlikelihood"] == pytest.approx(expected, rel=1e-3)
    assert metrics["loss"] == pytest.approx(metrics["kl"] + 2 * metrics["unlikelihood"], rel=1e-4)


def test_unlikelihood_pmi_pushes_down_only_the_repeats_the_context_lifts(tmp_path, tiny_model_dir, cli):
    # as above, with the repeats narrowed to the tokens whose PMI with the context (the base, the prompt
    # against the question alone) is above a threshold, computed here one reply at a time with full forward
    # passes. The tiny random model's loops are its own (PMI near 0 either way), so the threshold is the
    # median PMI of its repeated tokens: it keeps about half of them
    from mipo.engine.models import load_model

    model, _ = load_model(str(tiny_model_dir), device="cpu")

    repeating = own_repeats(tiny_model_dir, write_pairs(tmp_path / "pairs.jsonl"), 24, n=3)
    scored = []
    for prompt_ids, reply, negative_ids in repeating:
        with_context = full_pass_reply_logits(model, prompt_ids, reply)
        without = full_pass_reply_logits(model, negative_ids, reply)
        scored.append((with_context, reply, token_pmi(with_context, without, torch.tensor(reply)).tolist()))
    repeated_pmi = sorted(
        v for _, reply, pmi in scored for v, r in zip(pmi, repeated_ngram_mask(reply, 3)) if r
    )
    threshold = repeated_pmi[len(repeated_pmi) // 2]
    loops = []
    for with_context, reply, pmi in scored:
        mask = context_loop_mask(repeated_ngram_mask(reply, 3), pmi, threshold)
        if any(mask):
            loops.append((with_context, reply, mask))
    assert 0 < sum(sum(mask) for _, _, mask in loops) < len(repeated_pmi)

    _, metrics = train_once(
        cli, tmp_path, tiny_model_dir, "guidance", "--cad-alpha", "1", "--unlikelihood", "2",
        "--unlikelihood_tokens", "24", "--unlikelihood_ngram", "3", "--unlikelihood_pmi", repr(threshold),
    )  # fmt: skip
    assert metrics["own_repeating"] == pytest.approx(len(repeating) / 8)
    assert metrics["own_context_loops"] == pytest.approx(len(loops) / 8)
    expected = unlikelihood_loss(
        torch.cat([logits for logits, _, _ in loops]),
        torch.tensor([t for _, reply, _ in loops for t in reply]),
        torch.tensor([m for _, _, mask in loops for m in mask]),
    ).item()
    assert metrics["unlikelihood"] == pytest.approx(expected, rel=1e-3)
    assert metrics["loss"] == pytest.approx(metrics["kl"] + 2 * metrics["unlikelihood"], rel=1e-4)


# ---- bad input: one line, exit 2, before any model loads and before OUT exists ----


@pytest.fixture()
def no_model(monkeypatch):
    import mipo.engine.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mipo.engine.models, "load_model", refuse)


def one_line_error(cli, tmp_path: Path, pairs: Path, *args: str) -> str:
    out = tmp_path / "run"
    code, _, err = cli("train", "--pairs", pairs, "--out", out, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    return err.strip()


@pytest.mark.parametrize("objective", ["cca", "guidance"])
def test_pairs_without_negative_prompt_are_refused(tmp_path, cli, no_model, objective):
    pairs = write_pairs(tmp_path / "pairs.jsonl", negative=False)
    err = one_line_error(cli, tmp_path, pairs, "--objective", objective)
    assert err == (
        f"mipo train: error: {pairs}:1: field 'negative_prompt': missing (this objective needs it; mipo pairs "
        "writes it in every row)"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--cad-alpha", "-1"], "invalid GuidanceConfig: cad_alpha must be >= 0, got -1"),
        (["--cad_alpha", "abc"], "dpo: cad_alpha must be float, got 'abc'"),
        (["--cad-alpha", "abc"], "dpo: cad_alpha must be float, got 'abc'"),
        (["--preserve", "-0.5"], "preserve must be >= 0, got -0.5"),
        (["--cad-plausibility", "0"], "--cad-plausibility must be in (0, 1], got 0"),
        (["--cad_plausibility", "1.5"], "--cad-plausibility must be in (0, 1], got 1.5"),
        (["--decision_weight", "0.5"], "decision_weight must be >= 1, got 0.5"),
        (["--decision_weight", "many"], "dpo: decision_weight must be float, got 'many'"),
        (["--unlikelihood", "-1"], "unlikelihood must be >= 0, got -1"),
        (["--cad_lift_once", "maybe"], "dpo: cad_lift_once must be bool, got 'maybe'"),
        (["--unlikelihood_every", "0"], "unlikelihood_every must be >= 1, got 0"),
        (["--unlikelihood_tokens", "3"], "unlikelihood_tokens must be > unlikelihood_ngram (4), got 3"),
        (["--unlikelihood_ngram", "0"], "unlikelihood_ngram must be >= 1, got 0"),
        (["--unlikelihood_pmi", "inf"], "unlikelihood_pmi must be a finite number of nats, got inf"),
        (["--unlikelihood_pmi", "nan"], "unlikelihood_pmi must be a finite number of nats, got nan"),
    ],
)
def test_bad_guidance_settings_are_one_line_errors(tmp_path, cli, no_model, args, expected):
    err = one_line_error(
        cli, tmp_path, write_pairs(tmp_path / "pairs.jsonl"), "--objective", "guidance", *args
    )
    assert expected in err


def test_bad_cca_settings_and_guidance_settings_elsewhere_are_one_line_errors(tmp_path, cli, no_model):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    err = one_line_error(cli, tmp_path, pairs, "--objective", "cca", "--negative_weight", "-1")
    assert "negative_weight must be >= 0, got -1" in err
    err = one_line_error(cli, tmp_path, pairs, "--objective", "dpo", "--cad-alpha", "1")
    assert "unknown DPOConfig field(s) ['cad_alpha']" in err


def test_preserve_refuses_pairs_whose_rejected_reply_is_not_the_negative_prompts(tmp_path, cli, no_model):
    # mipo pairs --select pmi --rejected lowest: the rejected reply is the lowest-PMI reply to x itself
    pairs = write_pairs(tmp_path / "pairs.jsonl", generation={"select": "pmi", "rejected": "lowest"})
    err = one_line_error(cli, tmp_path, pairs, "--objective", "guidance", "--preserve", "1")
    assert err == (
        f"mipo train: error: {pairs}:1: field 'rejected': is not the negative prompt's own reply "
        "(generation.rejected: 'lowest'); --preserve needs it: pairs made with --rejected negative"
    )


def test_preserve_refuses_pairs_whose_every_negative_prompt_has_a_context(tmp_path, cli, no_model):
    # mipo pairs --strategy other-context: x' is the question with another user's context
    pairs = write_pairs(tmp_path / "pairs.jsonl", negative_context=True)
    err = one_line_error(cli, tmp_path, pairs, "--objective", "guidance", "--preserve", "1")
    assert err.startswith(
        f"mipo train: error: {pairs}:1: field 'negative_context': every pair's negative prompt carries a user "
        "context; --preserve keeps what the model does without one"
    )
    lines = pairs.read_text().splitlines()
    pairs.write_text(
        "\n".join([lines[0].replace('"negative_context": true', '"negative_context": "yes"')] + lines[1:])
    )
    err = one_line_error(cli, tmp_path, pairs, "--objective", "guidance")
    assert err == f"mipo train: error: {pairs}:1: field 'negative_context': expected true or false, got 'yes'"


def test_guidance_preserves_along_the_pairs_without_a_context_only(tmp_path, tiny_model_dir, cli):
    # half the pairs' negative prompts carry a context (as mixed pairs' other-context rows): a step trains, and
    # the preservation term is 0 at step 1 (the policy is the reference)
    pairs = write_pairs(tmp_path / "pairs.jsonl", negative_context=False)
    lines = pairs.read_text().splitlines()
    pairs.write_text("".join(
        (line.replace('"negative_context": false', '"negative_context": true') if i % 2 else line) + "\n"
        for i, line in enumerate(lines)
    ))  # fmt: skip
    out = tmp_path / "run"
    args = ["train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--objective", "guidance"]
    code, _, err = cli(*args, "--preserve", "1", *ONE_STEP)
    assert code == 0, err
    [metrics] = rows(out / "metrics.jsonl")
    assert metrics["preserve_kl"] == pytest.approx(0.0, abs=1e-5) and metrics["kl"] > 0


def test_a_resumed_guidance_run_reaches_the_same_losses(tmp_path, tiny_model_dir):
    from transformers import TrainerCallback

    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    pairs = write_pairs(tmp_path / "pairs.jsonl", 16)

    def config(out: str, **kw) -> TrainConfig:
        return TrainConfig(
            model=str(tiny_model_dir), pairs=str(pairs), out=str(tmp_path / out), objective="guidance",
            max_steps=4, save_steps=2, batch_size=4, max_length=64, learning_rate=1e-2,
            dpo={"cad_alpha": 2.0, "preserve": 1.0, "decision_weight": 3.0}, **kw,
        )  # fmt: skip

    whole = rows(train(config("whole")) / "metrics.jsonl")

    class Interrupt(Exception):
        pass

    class StopAtThree(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Interrupt  # after the step-2 checkpoint

    with pytest.raises(Interrupt):
        train(config("cut"), callbacks=[StopAtThree()])
    cut = rows(train(config("cut", resume=True)) / "metrics.jsonl")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]
    assert whole[-1]["kl"] < whole[0]["kl"]  # lr 1e-2 on 16 pairs: the policy moves towards the teacher
    for a, b in zip(whole, cut, strict=True):  # the same adapter initialisation and data order, then resumed
        for key in ("loss", "kl", "preserve_kl", "decisions"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
