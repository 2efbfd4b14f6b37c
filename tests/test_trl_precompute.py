"""mipo.trl_precompute reaches into TRL's DPOTrainer: this fails loudly if an installed TRL stops honouring it."""

from __future__ import annotations


def test_dpo_trainer_reads_the_reference_log_probs_mipo_attaches(tmp_path, tiny_model_dir):
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from mipo.models import load_model
    from mipo.trl_precompute import TESTED_WITH_TRL, use_precomputed_reference

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
        f"TRL {trl.__version__} no longer reads precomputed reference log-probs the way mipo.trl_precompute "
        f"sets them up (tested with TRL {TESTED_WITH_TRL}): loss {loss:.3f}; update mipo.trl_precompute"
    )
    assert trainer.ref_model is None
