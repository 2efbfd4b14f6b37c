"""The paper's contrastive objectives (InfoNCE, SAMI): the losses against hand-derived numbers, the data they
read, and ``mipo train --objective infonce|sami`` end to end on the tiny model; DPO + NLL (``loss_type sft``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mipo.training.objectives._contrastive import (
    collate_pairs,
    infonce_loss,
    pair_metrics,
    sami_loss,
    sequence_log_probs,
    tokenize_pair,
)

# log π(reply | prompt): rows x, x'; columns y+, y-
MATRIX = torch.tensor([[[-10.0, -14.0], [-12.0, -11.0]]])


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_infonce_is_the_cross_entropy_of_each_replys_own_prompt():
    # y+: -log(e^-10 / (e^-10 + e^-12)) = log(1 + e^-2); y-: -log(e^-11 / (e^-14 + e^-11)) = log(1 + e^-3)
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-3))) / 2
    assert expected == pytest.approx(0.0877576, abs=1e-6)
    assert infonce_loss(MATRIX, 1.0).item() == pytest.approx(expected, abs=1e-6)
    # the paper's temperature 100 divides the log-prob gaps: log(1 + e^-0.02), log(1 + e^-0.03)
    expected_t100 = (softplus(-0.02) + softplus(-0.03)) / 2
    assert infonce_loss(MATRIX, 100.0).item() == pytest.approx(expected_t100, abs=1e-6)
    # swapping the prompts (x' explains y+ best) turns both cross-entropies into log(1 + e^2), log(1 + e^3)
    swapped = MATRIX.flip(1)
    assert infonce_loss(swapped, 1.0).item() == pytest.approx((softplus(2) + softplus(3)) / 2, abs=1e-5)


def test_sami_adds_the_rows_to_the_columns():
    # rows: x: -log(e^-10 / (e^-10 + e^-14)) = log(1 + e^-4); x': -log(e^-11 / (e^-12 + e^-11)) = log(1 + e^-1)
    rows = (math.log1p(math.exp(-4)) + math.log1p(math.exp(-1))) / 2
    columns = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-3))) / 2
    assert (rows + columns) / 2 == pytest.approx(0.1267317, abs=1e-6)
    assert sami_loss(MATRIX, 1.0).item() == pytest.approx((rows + columns) / 2, abs=1e-6)
    batch = torch.cat([MATRIX, torch.zeros(1, 2, 2)])  # a pair with no information: log 2 everywhere
    assert sami_loss(batch, 1.0).tolist() == pytest.approx([(rows + columns) / 2, math.log(2)], abs=1e-6)


def test_reply_log_probs_summed_or_averaged_over_the_reply_tokens_only():
    token_logps = torch.tensor([[-5.0, -1.0, -2.0, -3.0], [-5.0, -4.0, -9.0, -9.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]])
    assert sequence_log_probs(token_logps, mask, "sum").tolist() == [-6.0, -4.0]
    assert sequence_log_probs(token_logps, mask, "mean").tolist() == [-2.0, -4.0]


def test_reply_log_probs_from_the_fused_lm_head_equal_those_of_the_full_logits(tiny_model_dir):
    # the trainer scores replies through TRL's fused LM head (no (4B, T, vocab) logits in memory)
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from mipo.training.objectives._contrastive_trainer import ContrastiveTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(0, 1000, (4, 12))
    completion = torch.zeros_like(ids)
    completion[:, 7:] = 1
    completion[1, 10:] = 0  # a shorter reply
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion}
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), dim=-1)
        token = logps.gather(-1, ids[:, 1:, None]).squeeze(-1)
        add_fused_lm_head(model)
        for reduction in ("sum", "mean"):
            trainer = SimpleNamespace(args=SimpleNamespace(logprob_reduction=reduction))
            got = ContrastiveTrainer.pair_log_probs(trainer, model, inputs)
            expected = sequence_log_probs(token, completion[:, 1:], reduction)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_metrics_use_the_mi_reward_under_dpos_names():
    metrics = {k: v.item() for k, v in pair_metrics(MATRIX).items()}
    assert metrics["rewards/chosen"] == 2.0  # log π(y+|x) - log π(y+|x') = -10 + 12
    assert metrics["rewards/rejected"] == -3.0  # log π(y-|x) - log π(y-|x') = -14 + 11
    assert metrics["rewards/margins"] == 5.0 and metrics["rewards/accuracies"] == 1.0
    assert (metrics["logps/chosen"], metrics["logps/rejected"]) == (-10.0, -14.0)


def conversational_pair(prompt: str, negative: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "negative_prompt": [{"role": "user", "content": negative}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def test_a_reply_has_the_same_tokens_under_both_prompts_and_is_cut_to_fit(smollm2_tokenizer):
    from mipo.engine.scoring import encode_response

    pair = conversational_pair(
        "Tell me about cats, briefly please.", "Hi", "Cats purr and sleep a lot.", "Dogs bark."
    )
    whole = tokenize_pair(pair, smollm2_tokenizer, None)
    prompt_ids, chosen_ids = encode_response(smollm2_tokenizer, pair["prompt"], "Cats purr and sleep a lot.")
    negative_ids, chosen_after_negative = encode_response(
        smollm2_tokenizer, pair["negative_prompt"], "Cats purr and sleep a lot."
    )
    assert chosen_ids == chosen_after_negative == whole["chosen_ids"]
    assert (whole["prompt_ids"], whole["negative_prompt_ids"]) == (prompt_ids, negative_ids)
    cut = tokenize_pair(pair, smollm2_tokenizer, len(prompt_ids) + 3)  # the longer prompt leaves 3 tokens
    assert cut["chosen_ids"] == chosen_ids[:3] and len(cut["rejected_ids"]) == 3 and cut["keep"]
    assert not tokenize_pair(pair, smollm2_tokenizer, len(prompt_ids))["keep"]

    batch = collate_pairs([whole], pad_token_id=0)
    assert batch["input_ids"].shape[0] == 4  # (x,y+), (x,y-), (x',y+), (x',y-)
    third = batch["input_ids"][2][batch["completion_mask"][2].bool()].tolist()
    assert third == chosen_ids  # the mask covers exactly y+ after x'
    assert batch["attention_mask"][2].sum() == len(negative_ids) + len(chosen_ids)


# ---- mipo train end to end on the tiny model ----

FAST = ["--batch-size", "8", "--max-length", "256", "--save-steps", "2", "--max_steps", "2"]


def write_pairs(path: Path, count: int = 8, *, negative: bool = True) -> Path:
    with path.open("w") as f:
        for i in range(count):
            row = conversational_pair(
                f"I like cats number {i}. What pet should I get?",
                "",
                f"A cat, since you like cats {i}.",
                f"A dog is a loyal pet number {i}.",
            )
            if not negative:
                del row["negative_prompt"]
            f.write(json.dumps({"id": i, **row}) + "\n")
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def base_model_loss(model_dir: Path, pairs: Path, loss, *, temperature=100.0, mean=False) -> float:
    """The loss at step 1 (LoRA starts as the base model), from mipo.engine.scoring's log-probs of the 2x2 cells."""
    from mipo.engine.models import load_model
    from mipo.engine.scoring import encode_response, sequence_logprobs

    model, tokenizer = load_model(str(model_dir), device="cpu")
    data = rows(pairs)
    cells = [(p[prompt], p[reply][0]["content"]) for p in data for prompt in ("prompt", "negative_prompt")
             for reply in ("chosen", "rejected")]  # fmt: skip
    logps = sequence_logprobs(model, tokenizer, [c for c, _ in cells], [r for _, r in cells])
    if mean:
        logps = [lp / len(encode_response(tokenizer, c, r)[1]) for lp, (c, r) in zip(logps, cells)]
    return loss(torch.tensor(logps).view(-1, 2, 2), temperature).mean().item()


def gap_from_chance(loss: float) -> float:
    """A random model's 2x2 log-probs barely depend on the prompt, so every loss is near log 2: compare the gaps."""
    return loss - math.log(2)


@pytest.mark.parametrize(
    ("objective", "extra"),
    [("infonce", []), ("sami", []), ("infonce", ["--full"]), ("sami", ["--full", "--kl_coef", "0.5"])],
)
def test_train_contrastive_objective_writes_the_run_folder(tmp_path, tiny_model_dir, cli, objective, extra):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    code, stdout, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--objective", objective, *FAST, *extra
    )  # fmt: skip
    assert code == 0, err
    assert "2 steps" in stdout
    weights = "model.safetensors" if "--full" in extra else "adapter_model.safetensors"
    for name in (weights, "tokenizer_config.json", "curves.png", "mipo_run.json", "train_summary.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    metrics = rows(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [1, 2]
    for key in ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "num_tokens"):
        assert math.isfinite(metrics[0][key]), key
    used = json.loads((out / "train_config.json").read_text())[f"{objective}_config"]
    assert (used["temperature"], used["logprob_reduction"], used["max_length"]) == (100.0, "sum", 256)
    summary = json.loads((out / "train_summary.json").read_text())
    assert (
        summary["final_loss"] == metrics[-1]["loss"]
        and summary["final_margins"] == metrics[-1]["rewards/margins"]
    )
    if not extra:  # LoRA's step 1 is the base model: the loss of its own 2x2 log-probs
        loss = infonce_loss if objective == "infonce" else sami_loss
        expected = base_model_loss(tiny_model_dir, pairs, loss)
        assert gap_from_chance(metrics[0]["loss"]) == pytest.approx(gap_from_chance(expected), rel=0.02)


def test_mean_log_probs_and_kl_with_lora(tmp_path, tiny_model_dir, cli):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--objective", "sami", *FAST,
        "--logprob_reduction", "mean", "--temperature", "1", "--kl_coef", "0.1",
    )  # fmt: skip
    assert code == 0, err
    first = rows(out / "metrics.jsonl")[0]
    # at step 1 the policy is the reference (KL 0): the loss of the base model's token-averaged log-probs
    expected = base_model_loss(tiny_model_dir, pairs, sami_loss, temperature=1.0, mean=True)
    assert gap_from_chance(first["loss"]) == pytest.approx(gap_from_chance(expected), rel=0.02)
    summed = base_model_loss(tiny_model_dir, pairs, sami_loss)  # what sums at temperature 100 would give
    assert gap_from_chance(summed) != pytest.approx(gap_from_chance(expected), rel=0.5)
    used = json.loads((out / "train_config.json").read_text())["sami_config"]
    assert (used["logprob_reduction"], used["temperature"], used["kl_coef"]) == ("mean", 1.0, 0.1)


def test_pairs_without_negative_prompt_are_refused_before_any_model_loads(tmp_path, cli, monkeypatch):
    import mipo.engine.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(mipo.engine.models, "load_model", no_model)
    pairs = write_pairs(tmp_path / "pairs.jsonl", negative=False)
    out = tmp_path / "run"
    code, _, err = cli("train", "--pairs", pairs, "--out", out, "--objective", "infonce")
    assert code == 2
    assert err.strip().splitlines() == [
        f"mipo train: error: {pairs}:1: field 'negative_prompt': missing (this objective needs it; mipo pairs writes it "
        "in every row)"
    ]
    assert not out.exists()


def test_bad_contrastive_settings_are_one_line_errors(tmp_path, tiny_model_dir, cli):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--objective", "sami",
        "--logprob_reduction", "median",
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "logprob_reduction must be one of sum, mean, got 'median'" in err
    assert not out.exists()


def test_dpo_with_an_nll_term_on_the_chosen_replies(tmp_path, tiny_model_dir, cli, monkeypatch):
    monkeypatch.setattr("mipo.training.ref_cache.cache_dir", lambda: tmp_path / "cache")
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    runs = {}
    for name, extra in (("dpo", []), ("nll", ["--loss_type", "sigmoid,sft", "--loss_weights", "[1, 0.5]"])):
        out = tmp_path / name
        code, _, err = cli("train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, *FAST, *extra)
        assert code == 0, err
        runs[name] = out
    used = json.loads((runs["nll"] / "train_config.json").read_text())["dpo_config"]
    assert (used["loss_type"], used["loss_weights"]) == (["sigmoid", "sft"], [1.0, 0.5])
    dpo, nll = rows(runs["dpo"] / "metrics.jsonl")[0], rows(runs["nll"] / "metrics.jsonl")[0]
    assert dpo["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
    # + 0.5 x the chosen replies' mean token NLL, about log(vocabulary size) for a random model
    assert 0.5 * 9 < nll["loss"] - math.log(2) < 0.5 * 12


def test_read_pairs_keeps_negative_prompt_in_the_prompts_format(tmp_path):
    from mipo.core.errors import InputError
    from mipo.formats.pairs_file import read_pairs

    conversational = write_pairs(tmp_path / "chat.jsonl", 2)
    [first, _] = read_pairs(conversational, keep=("negative_prompt",))
    assert first["negative_prompt"] == [{"role": "user", "content": ""}]
    assert "negative_prompt" not in read_pairs(conversational)[0]  # DPO's rows stay as they were
    standard = tmp_path / "standard.jsonl"
    row = {"prompt": "Q?", "chosen": "A.", "rejected": "B.", "negative_prompt": "Other?"}
    standard.write_text(json.dumps(row) + "\n" + json.dumps({**row, "negative_prompt": ["x"]}) + "\n")
    with pytest.raises(InputError, match=r"standard.jsonl:2: field 'negative_prompt': expected a string"):
        read_pairs(standard, keep=("negative_prompt",))


def test_a_resumed_contrastive_run_reaches_the_same_losses(tmp_path, tiny_model_dir):
    from transformers import TrainerCallback

    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    pairs = write_pairs(tmp_path / "pairs.jsonl", 16)

    def config(out: str, **kw) -> TrainConfig:
        return TrainConfig(
            model=str(tiny_model_dir), pairs=str(pairs), out=str(tmp_path / out), objective="sami", max_steps=4,
            save_steps=2, batch_size=4, max_length=64, learning_rate=1e-2, **kw,
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
    for a, b in zip(whole, cut, strict=True):  # the same adapter initialisation and data order, then resumed
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["rewards/margins"] == pytest.approx(a["rewards/margins"], abs=1e-5)


@pytest.mark.parametrize("how", ["accelerate launch", "a deepspeed config given to TRL"])
@pytest.mark.parametrize("objective", ["infonce", "sami"])
def test_zero3_is_refused_in_one_line_before_any_model_loads(
    tmp_path, tiny_model_dir, cli, monkeypatch, objective, how
):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    extra = []
    if how == "accelerate launch":  # what accelerate launch sets from a config file with zero_stage: 3
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    else:
        deepspeed = tmp_path / "ds.json"
        deepspeed.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
        extra = ["--dpo", f"deepspeed={deepspeed}"]
    out = tmp_path / "run"
    code, _, err = cli(
        "train", "--model", tiny_model_dir, "--pairs", pairs, "--out", out, "--objective", objective, *extra
    )
    errors = [line for line in err.splitlines() if line.startswith("mipo train: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert (
        f"--objective {objective} cannot run under DeepSpeed ZeRO-3: its trainer copies the model"
        in errors[0]
    )
    assert "or ZeRO-2 (zero_stage: 2), or train --objective dpo" in errors[0]
    assert not out.exists()
