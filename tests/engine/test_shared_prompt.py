"""One copy of each pair's prompt (mipo.engine.shared_prompt) gives TRL's log-probs, loss, gradients and metrics."""

from __future__ import annotations

import pytest

PAIRS = [  # prompts and replies of different lengths; the last pair's rejected reply is empty of words
    (
        "What is the capital of France? Answer briefly.",
        "Paris.",
        "Bananas are yellow, and they grow in bunches.",
    ),
    ("Hi", "Hello! How can I help you today, my friend?", "No."),
    ("Write one long sentence about the sea and the sky.", "The sea is wide and the sky is high.", ""),
]


def build(tmp_path, tiny_model_dir, *, max_length=None, attention="sdpa", double=False, **config):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from mipo.engine.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    model.set_attn_implementation(attention)
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in PAIRS
    ]
    args = DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=3, max_length=max_length, report_to="none",
        use_cpu=True, precompute_ref_log_probs=False, remove_unused_columns=False, gradient_checkpointing=False,
        **config,
    )  # fmt: skip
    import torch

    torch.manual_seed(0)  # init_lora_weights=False: a random adapter, so that policy and reference differ
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
        ),
    )
    if double:  # float64: the two layouts' sums differ by rounding alone (float32 rounds ~1e-5 apart)
        trainer.model.double()
    return trainer


def scores(trainer):
    """Reference log-probs, loss, adapter gradients and logged metrics of one batch of every pair."""
    import torch

    from mipo.engine.trl_internals import reply_positions_only

    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(examples)
    with reply_positions_only():
        reference = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return batch, reference, loss.detach(), grads, metrics


@pytest.mark.parametrize(
    "attention, max_length, loss_type, double",
    [
        ("sdpa", None, "sigmoid", True),
        ("eager", None, "sigmoid", True),
        ("sdpa", 44, "sigmoid", True),  # truncated replies (TRL drops pairs with none left)
        ("sdpa", None, "ipo", True),  # a loss that divides by the reply lengths
        ("sdpa", 44, "sigmoid", False),  # float32, as mipo trains on a CPU
    ],
)
def test_one_prompt_copy_gives_trls_log_probs_loss_gradients_and_metrics(
    tmp_path, tiny_model_dir, attention, max_length, loss_type, double
):
    import torch

    from mipo.engine.shared_prompt import share_prompts

    setup = {"max_length": max_length, "attention": attention, "loss_type": [loss_type], "double": double}
    trl_rows, shared = (
        build(tmp_path / "a", tiny_model_dir, **setup),
        build(tmp_path / "b", tiny_model_dir, **setup),
    )
    tol = {"rtol": 1e-6, "atol": 1e-6} if double else {"rtol": 1e-4, "atol": 1e-5}
    assert share_prompts(shared)
    want, got = scores(trl_rows), scores(shared)

    # fewer tokens through the model: one prompt per pair (plus the copy of its last token)
    prompts = [len(trl_rows.train_dataset[i]["prompt_ids"]) for i in range(3)]
    trl_width, shared_width = want[0]["input_ids"].shape[1], got[0]["input_ids"].shape[1]
    if max_length is None:
        assert got[0]["pair_branch"][:3].ge(0).sum() == want[0]["attention_mask"].sum() - sum(prompts) + 3
    assert shared_width <= 2 * trl_width
    torch.testing.assert_close(got[1], want[1], **tol)  # reference log-probs
    torch.testing.assert_close(got[2], want[2], **tol)  # loss
    assert got[3].keys() == want[3].keys() and len(want[3]) > 0
    for name, grad in want[3].items():
        torch.testing.assert_close(got[3][name], grad, rtol=100 * tol["rtol"], atol=tol["atol"])
    assert got[4].keys() == want[4].keys()
    for name, value in want[4].items():  # TRL's logged metrics, num_tokens included, are the same
        assert got[4][name] == pytest.approx(value, rel=100 * tol["rtol"], abs=tol["atol"]), name


def test_a_pair_without_prompt_tokens_gets_trls_rows():
    from mipo.engine.shared_prompt import SharedPromptCollator

    collator = SharedPromptCollator(pad_token_id=0)
    batch = collator([{"prompt_ids": [], "chosen_ids": [5, 6], "rejected_ids": [7]}])
    assert "pair_branch" not in batch
    assert batch["input_ids"].tolist() == [[5, 6], [7, 0]]


def test_prompts_are_not_shared_where_the_two_rows_differ(tmp_path, tiny_model_dir, caplog):
    from mipo.engine.shared_prompt import share_prompts

    trainer = build(tmp_path, tiny_model_dir, max_length=16, truncation_mode="keep_end")
    collator = trainer.data_collator
    with caplog.at_level("INFO", logger="mipo.engine.shared_prompt"):
        assert not share_prompts(trainer)
    assert trainer.data_collator is collator
    assert "truncation_mode='keep_end' cuts the two rows' prompts differently" in caplog.text


def test_the_packed_row_and_its_mask():
    import torch

    from mipo.engine.shared_prompt import attention_mask, packed_pair

    row = packed_pair([10, 11, 12], [20, 21], [30], max_length=None)
    assert row["input_ids"] == [10, 11, 12, 20, 21, 12, 30]
    assert row["position_ids"] == [0, 1, 2, 3, 4, 2, 3]
    assert row["pair_branch"] == [0, 0, 1, 1, 1, 2, 2]
    assert sum(row["chosen_tokens"]) + sum(row["rejected_tokens"]) == (3 + 2) + (3 + 1)
    mask = attention_mask(torch.tensor([row["pair_branch"] + [-1]]), "sdpa", torch.float32)[0, 0].int()
    assert mask.tolist() == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],  # p2: the chosen branch's copy of the prompt's last token
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0, 1, 0, 0],  # x: the rejected branch's copy of p2, over p0, p1 and itself
        [1, 1, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 1],  # padding sees itself only
    ]
    assert packed_pair([10, 11, 12], [20, 21], [30], max_length=4)["input_ids"] == [10, 11, 12, 20, 12, 30]
