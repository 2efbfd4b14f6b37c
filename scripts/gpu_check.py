"""mipo's GPU check: one command that runs what the CPU suite cannot, on one GPU, in under 8 minutes.

    python scripts/gpu_check.py --tokenizer TOKENIZER_DIR --out gpu_check.json      # a GPU machine
    python scripts/gpu_check.py --cpu --out gpu_check.json                          # the tiny model on a CPU
    python scripts/gpu_check.py --save-tokenizer DIR     # here: the embedded SmolLM2 tokenizer (2 MB), to carry

The machine it is written for has no network and no model weights: the models are built from configs with
random weights and the SmolLM2 tokenizer (its chat template included): a tiny Llama for the checks, and one
of Llama-3.2-1B's shape (16 layers, hidden 2048, 8 key-value heads; SmolLM2's 49,152-token vocabulary) in
bf16 for the speeds and the memory. It needs PyTorch, transformers, PEFT, accelerate, and TRL and datasets
(their wheels travel where they are not installed; docs/gpu.md says how). vLLM is not checked here.

Checks (True/False): ``shared_prompt_fp32`` and ``shared_prompt_bf16``: one copy of each pair's prompt gives
the reference log-probs and loss of TRL's two rows on this device's SDPA (fp32 within 1e-5, bf16 within
bf16 rounding); ``lora_dpo`` and ``full_dpo``: ``mipo train`` runs DPO steps, the full fine-tune with one model
alive when training starts (the reference copy freed), peak memory in GB; ``hf_greedy``: mipo's decode loop
gives ``model.generate``'s greedy replies on this device. Measures: mipo's training tokens/s against TRL's
``DPOTrainer`` with its defaults (same LoRA, pairs, batch and steps), generation tokens/s against a batched
``model.generate``. Prints one line of ``key=value`` and writes them as JSON; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, not installed

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}  # fmt: skip
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "rope_theta": 500000.0,
}  # fmt: skip  (meta-llama/Llama-3.2-1B's config.json)
CPU_SPEED = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2}  # fmt: skip
WORDS = "the cat sat on a mat while dogs ran over green hills and birds sang songs of joy in spring".split()


def build_model(tokenizer, shape: dict, folder: Path, dtype, device: str) -> Path:
    """A Llama of ``shape`` with random weights (seed 0) and the tokenizer, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **shape,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):  # a 1B model is initialised on the GPU in seconds
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def write_pairs(path: Path, count: int, reply_words: int) -> Path:
    rng = random.Random(0)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    rows = [
        {"prompt": [{"role": "user", "content": text(12)}],
         "chosen": [{"role": "assistant", "content": text(reply_words)}],
         "rejected": [{"role": "assistant", "content": text(reply_words - 4)}]}
        for _ in range(count)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dpo_trainer(folder: Path, pairs: Path, work: Path, device: str, dtype, init_lora_weights=True, **config):
    """TRL's DPOTrainer on ``folder`` with a random LoRA adapter (so policy and reference differ)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from mipo.engine.models import load_tokenizer
    from mipo.formats.pairs_file import read_pairs

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    args = DPOConfig(output_dir=str(work), report_to="none", use_cpu=device == "cpu", **config)
    torch.manual_seed(0)
    return DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(read_pairs(pairs)),
        processing_class=load_tokenizer(str(folder)),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM",
                               init_lora_weights=init_lora_weights),
    )  # fmt: skip


def check_shared_prompt(folder: Path, pairs: Path, work: Path, device: str, dtype, tolerance: float) -> dict:
    """Reference log-probs and loss of one batch: mipo's packed rows against TRL's two rows."""
    import torch

    from mipo.engine.shared_prompt import share_prompts
    from mipo.engine.trl_internals import reply_positions_only

    results = []
    for shared in (False, True):
        trainer = dpo_trainer(
            folder, pairs, work / f"shared-{shared}", device, dtype, per_device_train_batch_size=4,
            precompute_ref_log_probs=False, remove_unused_columns=False, gradient_checkpointing=False,
            init_lora_weights=False,
        )  # fmt: skip
        if shared and not share_prompts(trainer):
            return {"ok": False, "why": "share_prompts refused"}
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        batch = {k: v.to(trainer.model.device) for k, v in batch.items()}
        with reply_positions_only(), torch.no_grad():
            reference = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch)).float()
            loss = trainer.compute_loss(trainer.model, batch).float()
        results.append((reference, loss))
    (ref_a, loss_a), (ref_b, loss_b) = results
    gap = max(float((ref_a - ref_b).abs().max() / ref_a.abs().max()), float((loss_a - loss_b).abs()))
    return {"ok": gap <= tolerance, "gap": gap}


def live_models() -> int:
    """Language models alive in this process (a ``...ForCausalLM``: its inner ``...Model`` is not counted)."""
    import warnings

    from transformers import GenerationMixin

    with warnings.catch_warnings():  # isinstance on every object wakes deprecated module attributes
        warnings.simplefilter("ignore")
        return sum(isinstance(o, GenerationMixin) for o in gc.get_objects())


def check_mipo_train(folder: Path, pairs: Path, work: Path, device: str, full: bool, steps: int) -> dict:
    """``mipo train`` for ``steps`` DPO steps; how many models are alive when training starts; peak memory."""
    import torch
    from transformers import TrainerCallback

    from mipo.core.config import from_dict
    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    alive = []

    class CountModels(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            gc.collect()
            alive.append(live_models())

    settings = {"model": str(folder), "pairs": str(pairs), "out": str(work), "full": full, "max_steps": steps,
                "per_device_train_batch_size": 8, "max_length": 512, "device": device, "ref_cache": False}  # fmt: skip
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = train(from_dict(TrainConfig, settings, source="gpu_check"), callbacks=[CountModels()])
    seconds = time.perf_counter() - start
    summary = json.loads((out / "train_summary.json").read_text())
    peak = torch.cuda.max_memory_allocated() / 2**30 if device != "cpu" else None
    return {"ok": summary["steps"] == steps and alive == [1], "models_alive": alive[0], "peak_gb": peak,
            "tokens_s": summary["tokens"] / seconds}  # fmt: skip


def trl_tokens_per_second(folder: Path, pairs: Path, work: Path, device: str, dtype, steps: int) -> float:
    """TRL's DPOTrainer with its defaults (a reference pass each step, gradient checkpointing), same LoRA."""
    from mipo.training.callbacks import use_quiet_progress

    start = time.perf_counter()
    trainer = dpo_trainer(folder, pairs, work, device, dtype, max_steps=steps, per_device_train_batch_size=8,
                          max_length=512, bf16=device != "cpu")  # fmt: skip
    use_quiet_progress(trainer)  # the Trainer prints its final metrics to stdout otherwise
    trainer.train()
    return trainer._total_train_tokens / (time.perf_counter() - start)  # TRL's own count of the tokens


def generation(folder: Path, device: str, dtype, prompts: int, new_tokens: int) -> dict:
    """mipo's decode loop against one batched ``model.generate``, greedy: the replies and tokens/s."""
    import torch

    from mipo.engine.generation import (
        GenerationStats,
        encode_conversations,
        generate_responses,
        stop_token_ids,
    )
    from mipo.engine.models import load_model

    model, tokenizer = load_model(str(folder), device=device, dtype=dtype)
    rng = random.Random(1)
    conversations = [[{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(8 + i % 24))}]
                     for i in range(prompts)]  # fmt: skip
    generate_responses(
        model, tokenizer, conversations[:2], temperature=0, max_new_tokens=4, workers=1
    )  # warm-up
    stats = GenerationStats()
    ours = generate_responses(model, tokenizer, conversations, temperature=0, max_new_tokens=new_tokens,
                              batch_size=prompts, stats=stats, progress=False, workers=1)  # fmt: skip
    encoded = encode_conversations(tokenizer, conversations)
    width = max(len(ids) for ids in encoded)
    input_ids = torch.tensor(
        [[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in encoded], device=device
    )
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
    stops = stop_token_ids(model, tokenizer)
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    generated = model.generate(input_ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                               eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)[:, width:]  # fmt: skip
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    theirs, tokens = [], 0
    for row in generated.tolist():
        cut = next((n for n, t in enumerate(row) if t in stops), len(row))
        tokens += cut
        theirs.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return {
        "same": [r[0] for r in ours] == theirs,
        "ours": stats.tokens_per_second,
        "generate": tokens / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the tiny model and small sizes on the CPU")
    parser.add_argument("--tokenizer", help="a saved tokenizer folder (default: the built-in SmolLM2's)")
    parser.add_argument(
        "--save-tokenizer", metavar="DIR", help="save the built-in SmolLM2 tokenizer to DIR, then stop"
    )
    parser.add_argument("--out", default="gpu_check.json", help="the JSON file of results")
    args = parser.parse_args(argv)
    import torch

    from mipo.engine.models import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer or "smollm2-135m")
    if args.save_tokenizer:
        tokenizer.save_pretrained(args.save_tokenizer)
        return 0
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device: pass --cpu for the CPU run", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu else "cuda"
    fast = torch.float32 if args.cpu else torch.bfloat16
    results = {"device": torch.cuda.get_device_name() if not args.cpu else "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        import mipo.training.ref_cache

        mipo.training.ref_cache.cache_dir = lambda: work / "cache"
        tiny = build_model(tokenizer, TINY, work / "tiny", torch.float32, device)
        speed = build_model(tokenizer, CPU_SPEED if args.cpu else LLAMA_1B, work / "speed", fast, device)
        few = write_pairs(work / "few.jsonl", 8, 20)
        many = write_pairs(work / "many.jsonl", *((16, 30) if args.cpu else (64, 100)))
        for name, dtype, tolerance in (("fp32", torch.float32, 1e-5), ("bf16", torch.bfloat16, 2e-2)):
            shared = check_shared_prompt(tiny, few, work / name, device, dtype, tolerance)
            results[f"shared_prompt_{name}"], results[f"shared_prompt_{name}_gap"] = (
                shared["ok"],
                shared.get("gap"),
            )
        steps = 2 if args.cpu else 8
        for method, full in (("lora", False), ("full", True)):
            run = check_mipo_train(speed, many, work / method, device, full, steps)
            results[f"{method}_dpo"], results[f"{method}_peak_gb"] = run["ok"], run["peak_gb"]
            results[f"{method}_models_alive"] = run["models_alive"]
            if method == "lora":
                results["train_tokens_s_mipo"] = run["tokens_s"]
        results["train_tokens_s_trl"] = trl_tokens_per_second(speed, many, work / "trl", device, fast, steps)
        results["train_vs_trl"] = results["train_tokens_s_mipo"] / results["train_tokens_s_trl"]
        results["hf_greedy"] = generation(tiny, device, torch.float32, 8, 12)["same"]
        speeds = generation(speed, device, fast, 8 if args.cpu else 64, 8 if args.cpu else 128)
        results["gen_tokens_s_mipo"], results["gen_tokens_s_generate"] = speeds["ours"], speeds["generate"]
        results["gen_vs_generate"] = speeds["ours"] / speeds["generate"]
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in results.items()}
    print(" ".join(f"{k}={str(v).replace(' ', '_')}" for k, v in shown.items()))
    checks = ("shared_prompt_fp32", "shared_prompt_bf16", "lora_dpo", "full_dpo", "hf_greedy")
    return 0 if all(results[k] is True for k in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
