"""bf16 against fp32 on this CPU, in one run: mipo's generation, scoring and LoRA DPO training tokens/s in
each dtype, beside the peers in the same dtype (``model.generate`` in batches of 32; TRL's ``DPOTrainer``
with its defaults), on SmolLM2-135M. Prints the CPU's bf16 units first: on a CPU without one (no
``avx512_bf16``/``amx_bf16`` flag) bf16 is emulated and slower, which is why ``--dtype auto`` is fp32 there.

    PYTHONPATH=src python bench/dtype.py [--prompts 32] [--max-new-tokens 64] [--pairs 32] [--trl-steps 2]

Ends with one line of ``key=value`` ratios: ``<work>_bf16_over_fp32`` for mipo, and ``<work>_vs_peer_<dtype>``
(mipo's tokens/s over the peer's, in the same dtype).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import mipo  # noqa: F401  (before torch: it sets OMP_WAIT_POLICY before OpenMP loads)

sys.path.insert(0, str(Path(__file__).parent))
from generation import make_prompts  # noqa: E402
from training import lora_config, make_pairs  # noqa: E402

DTYPES = ("float32", "bfloat16")


def generation_rates(dtype: str, prompts: int, max_new_tokens: int) -> dict[str, float]:
    """tokens/s of mipo's engine (its default workers) and of ``model.generate`` in batches of 32."""
    import torch

    from mipo.engine.generation import (
        GenerationStats,
        encode_conversations,
        generate_responses,
        stop_token_ids,
    )
    from mipo.engine.models import load_model

    model, tokenizer = load_model("smollm2-135m", device="cpu", dtype=getattr(torch, dtype))
    convs = [[{"role": "user", "content": t}] for t in make_prompts(prompts)]
    stats = GenerationStats()
    start = time.perf_counter()
    generate_responses(
        model, tokenizer, convs, max_new_tokens=max_new_tokens, temperature=0.1, stats=stats, progress=False
    )
    mipo_rate = stats.new_tokens / (time.perf_counter() - start)

    encoded = encode_conversations(tokenizer, convs)
    stops = stop_token_ids(model, tokenizer)
    torch.manual_seed(0)
    tokens, start = 0, time.perf_counter()
    for first in range(0, len(encoded), 32):
        padded = tokenizer.pad({"input_ids": encoded[first : first + 32]}, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                **padded, do_sample=True, temperature=0.1, top_p=0.9, max_new_tokens=max_new_tokens,
                eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        new = out[:, padded["input_ids"].shape[1] :]
        tokens += int((~torch.isin(new, torch.tensor([*stops, tokenizer.pad_token_id]))).sum())
    peer_rate = tokens / (time.perf_counter() - start)
    print(f"  generation {dtype}: mipo {mipo_rate:.0f} tok/s, model.generate batch 32 {peer_rate:.0f} tok/s")
    return {"generation": mipo_rate, "generation_peer": peer_rate}


def scoring_rate(dtype: str, pairs_path: Path) -> dict[str, float]:
    """tokens/s of ``sequence_logprobs`` (PMI, --select pmi, log-likelihood choices) over the pairs' replies."""
    import torch

    from mipo.engine.models import load_model
    from mipo.engine.scoring import sequence_logprobs
    from mipo.formats.pairs_file import read_pairs

    model, tokenizer = load_model("smollm2-135m", device="cpu", dtype=getattr(torch, dtype))
    pairs = read_pairs(pairs_path)
    convs = [p["prompt"] for p in pairs for _ in (0, 1)]
    replies = [p[side][0]["content"] for p in pairs for side in ("chosen", "rejected")]
    tokens = sum(len(tokenizer(r, add_special_tokens=False).input_ids) for r in replies)
    start = time.perf_counter()
    sequence_logprobs(model, tokenizer, convs, replies, batch_size=8)
    rate = tokens / (time.perf_counter() - start)
    print(f"  scoring {dtype}: {rate:.0f} reply tok/s")
    return {"scoring": rate}


def training_rates(dtype: str, pairs_path: Path, work: Path, trl_steps: int) -> dict[str, float]:
    """tokens/s of ``mipo train`` (LoRA DPO, cold reference cache, model load included) and of TRL's
    ``DPOTrainer`` with its defaults (timed from its construction), in ``dtype``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from mipo.engine.models import load_tokenizer, resolve_model
    from mipo.formats.pairs_file import read_pairs
    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    start = time.perf_counter()
    out = train(
        TrainConfig(pairs=str(pairs_path), out=str(work / f"mipo-{dtype}"), dtype=dtype, ref_cache=False)
    )
    seconds = time.perf_counter() - start
    tokens = json.loads((out / "train_summary.json").read_text())["tokens"]
    mipo_rate = tokens / seconds

    source = resolve_model("smollm2-135m")
    bf16 = dtype == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype))
    args = DPOConfig(
        output_dir=str(work / f"trl-{dtype}"), use_cpu=True, bf16=bf16, report_to="none", max_steps=trl_steps
    )
    start = time.perf_counter()
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(read_pairs(pairs_path)),
        processing_class=load_tokenizer(source), peft_config=lora_config(),
    )  # fmt: skip
    trainer.train()
    peer_rate = trainer._total_train_tokens / (time.perf_counter() - start)
    print(
        f"  training {dtype}: mipo train {mipo_rate:.0f} tok/s, TRL DPOTrainer defaults {peer_rate:.0f} tok/s"
    )
    return {"training": mipo_rate, "training_peer": peer_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=32, help="GSM8K pairs scored and trained on")
    parser.add_argument("--trl-steps", type=int, default=2, help="TRL's steps (slow: a reference pass each)")
    args = parser.parse_args()

    import torch

    from mipo.engine.dtypes import dtype_report
    from mipo.engine.environment import cpu_summary
    from mipo.engine.models import load_tokenizer

    print(f"CPU: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(dtype_report("cpu"))
    rates: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = make_pairs(load_tokenizer("smollm2-135m"), work / "pairs.jsonl", args.pairs)
        for dtype in DTYPES:
            print(f"{dtype}:", flush=True)
            rates[dtype] = generation_rates(dtype, args.prompts, args.max_new_tokens)
            rates[dtype] |= scoring_rate(dtype, pairs)
            rates[dtype] |= training_rates(dtype, pairs, work, args.trl_steps)
    fp32, bf16 = rates["float32"], rates["bfloat16"]
    ratios = {
        f"{work}_bf16_over_fp32": bf16[work] / fp32[work] for work in ("generation", "scoring", "training")
    }
    for dtype in DTYPES:
        for work in ("generation", "training"):
            ratios[f"{work}_vs_peer_{dtype}"] = rates[dtype][work] / rates[dtype][f"{work}_peer"]
    print(" ".join(f"{k}={v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
