"""mipo.engine.trl_internals reaches into TRL's DPOTrainer: this fails loudly if an installed TRL stops honouring it."""

from __future__ import annotations


def test_dpo_trainer_reads_the_reference_log_probs_mipo_attaches(tmp_path, tiny_model_dir):
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from mipo.engine.models import load_model
    from mipo.engine.trl_internals import TESTED_WITH_TRL, use_precomputed_reference

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    pairs = [
        {
            "prompt": [{"role": "user", "content": f"question {i}"}],
            "chosen": [{"role": "assistant", "content": f"a good answer {i}"}],
            "rejected": [{"role": "assistant", "content": f"another answer {i}"}],
        }
        for i in range(2)
    ]
    args = DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_length=64, report_to="none", use_cpu=True,
        precompute_ref_log_probs=False, remove_unused_columns=False, gradient_checkpointing=False,
    )  # fmt: skip
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    # A reference that loves the rejected replies: the loss is huge if, and only if, the trainer reads these
    # columns instead of running its own reference (the model with the adapter off: loss ln 2 = 0.69).
    dataset = trainer.train_dataset.add_column("ref_chosen_logps", [0.0, 0.0])
    trainer.train_dataset = dataset.add_column("ref_rejected_logps", [-1000.0, -1000.0])
    use_precomputed_reference(trainer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    loss = float(trainer.compute_loss(trainer.model, batch))
    assert loss > 20, (
        f"TRL {trl.__version__} no longer reads precomputed reference log-probs the way mipo.engine.trl_internals "
        f"sets them up (tested with TRL {TESTED_WITH_TRL}): loss {loss:.3f}; update mipo.engine.trl_internals"
    )
    assert trainer.ref_model is None


def test_fused_lm_head_scores_only_the_reply_positions_on_a_cpu_with_the_same_log_probs(
    tiny_model_dir, monkeypatch
):
    import torch
    import trl
    from trl.trainer import utils
    from trl.trainer.utils import add_fused_lm_head

    from mipo.engine.models import load_model
    from mipo.engine.trl_internals import TESTED_WITH_TRL, reply_positions_only

    assert hasattr(utils, "_use_triton"), (
        f"TRL {trl.__version__} no longer decides in trl.trainer.utils._use_triton whether its fused LM head "
        f"scores only the labelled positions (tested with TRL {TESTED_WITH_TRL}): update mipo.engine.trl_internals"
    )
    model, _ = load_model(str(tiny_model_dir), device="cpu")
    add_fused_lm_head(model)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (3, 20))
    labels = ids.clone()
    labels[:, :14] = -100  # a 14-token prompt, a 6-token reply
    labels[2, 17:] = -100  # and a shorter reply (padding)
    rows_scored = []
    apply = utils._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        rows_scored.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(utils._ChunkedLogProbFunction, "apply", counting)

    def log_probs():
        return model(
            input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True
        ).log_probs

    every_position = log_probs()
    with reply_positions_only():
        replies_only = log_probs()
    assert rows_scored == [3 * 19, int((labels[:, 1:] != -100).sum())] == [57, 6 + 6 + 3]
    torch.testing.assert_close(replies_only, every_position, rtol=0, atol=1e-6)
    assert utils._use_triton(torch.device("cpu")) is False  # restored on the way out


def test_a_full_fine_tunes_reference_copy_is_freed_for_real(tmp_path, tiny_model_dir):
    """TRL loads a reference copy for a full fine-tune (mipo turns TRL's precompute off) and accelerate keeps a
    second reference to it: once mipo has the reference log-probs, no reference to the copy is left."""
    import gc
    import weakref

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from mipo.engine.models import load_model
    from mipo.engine.trl_internals import use_precomputed_reference

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    pairs = [
        {
            "prompt": [{"role": "user", "content": f"question {i}"}],
            "chosen": [{"role": "assistant", "content": f"a good answer {i}"}],
            "rejected": [{"role": "assistant", "content": f"another answer {i}"}],
        }
        for i in range(2)
    ]
    args = DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_length=64, report_to="none", use_cpu=True,
        precompute_ref_log_probs=False, remove_unused_columns=False, gradient_checkpointing=False,
    )  # fmt: skip
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer
    )
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model  # TRL loaded a copy
    copy = weakref.ref(trainer.ref_model)
    use_precomputed_reference(trainer)
    gc.collect()
    assert copy() is None, (
        "the reference copy is still referenced: mipo.engine.trl_internals.release_reference_model"
    )
    assert trainer.ref_model is None and all(m is not None for m in trainer.accelerator._models)
