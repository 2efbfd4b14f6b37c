"""The config and trainer of the contrastive objectives (``infonce``, ``sami``): a small ``transformers.Trainer``
whose ``compute_loss`` scores a pair's four (prompt, reply) sequences in one forward pass.

Imported only when one of these objectives trains (or ``mipo train --help`` lists its fields): it imports
transformers. The maths are in ``mipo.training.objectives._contrastive``.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments

from mipo.training.objectives._contrastive import (
    REDUCTIONS,
    collate_pairs,
    infonce_loss,
    pair_metrics,
    sami_loss,
    sequence_log_probs,
    tokenize_pair,
)

log = logging.getLogger(__name__)


@dataclass
class ContrastiveConfig(TrainingArguments):
    """``TrainingArguments`` plus the contrastive objectives' own settings."""

    max_length: int | None = field(
        default=1024, metadata={"help": "Longest (prompt, reply) sequence in tokens; replies are cut to fit."}
    )
    temperature: float = field(
        default=100.0,
        metadata={
            "help": "Divides the 2x2 log-probs before each softmax (the paper's code: 100 on summed log-probs). "
            "Use about 1 with --logprob_reduction mean."
        },
    )
    logprob_reduction: str = field(
        default="sum",
        metadata={
            "help": "How a reply's token log-probs make its log-prob: sum (the paper's code) or mean (SAMI's). "
            "A mean does not favour short replies in SAMI's rows."
        },
    )
    kl_coef: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a KL(reference || policy) term on the pair's own (prompt, reply) sequences, as "
            "in SAMI (0: off, no reference model). The replies are the reference's samples, so "
            "mean(log ref - log policy) estimates it."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.logprob_reduction not in REDUCTIONS:
            problems.append(
                f"logprob_reduction must be one of {', '.join(REDUCTIONS)}, got {self.logprob_reduction!r}"
            )
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.kl_coef < 0:
            problems.append(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.max_length is not None and self.max_length < 2:
            problems.append(f"max_length must be >= 2, got {self.max_length}")
        if problems:
            raise ValueError("; ".join(problems))


class ContrastiveTrainer(Trainer):
    """Built as mipo builds every objective's trainer (see ``mipo.training.trainer.build_trainer``)."""

    contrastive_loss = staticmethod(infonce_loss)  # (B, 2, 2) matrices, temperature -> (B,) losses

    def __init__(self, model, args, train_dataset, processing_class, peft_config=None, callbacks=None):
        from trl.trainer.utils import add_fused_lm_head

        # Full weights with a KL term: a frozen copy of the starting model (LoRA: the base, adapters off).
        self.reference_model = (
            copy.deepcopy(model).eval().requires_grad_(False)
            if args.kl_coef > 0 and peft_config is None
            else None
        )
        # TRL's fused LM head (as its DPOTrainer uses): log-probs of the labelled tokens, projected in tiles,
        # without the (4B, T, vocab) logits; those took 13 GB at batch 4 and max_length 256 on the 135M model.
        for module in (model, self.reference_model):
            if module is not None:
                add_fused_lm_head(module)
        if peft_config is not None:
            from peft import get_peft_model
            from transformers import set_seed

            set_seed(
                args.seed
            )  # the adapters' initial weights: the same for the same --seed, whatever ran before

            if args.activation_checkpointing:
                model.enable_input_require_grads()  # the frozen embeddings must pass gradients to the adapters
            model = get_peft_model(model, peft_config)
        pad_id = processing_class.pad_token_id
        pad_id = pad_id if pad_id is not None else processing_class.eos_token_id
        super().__init__(
            model=model,
            args=args,
            train_dataset=_tokenized(train_dataset, processing_class, args.max_length),
            processing_class=processing_class,
            data_collator=lambda rows: collate_pairs(rows, pad_id),
            callbacks=callbacks,
        )
        self.model_accepts_loss_kwargs = (
            False  # the loss is a mean per pair: Trainer scales it for accumulation
        )
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._num_tokens = 0.0

    def pair_log_probs(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(4B, T) sequences -> (4B,) reply log-probs under ``model`` (its forward patched with TRL's fused LM
        head: only the reply tokens are labelled, every other position scores 0)."""
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            fused_lm_head=True,
            use_cache=False,
        )
        token_logps = outputs.log_probs  # (4B, T-1)
        return sequence_log_probs(token_logps, inputs["completion_mask"][:, 1:], self.args.logprob_reduction)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        matrix = self.pair_log_probs(model, inputs).view(-1, 2, 2)  # (B, prompts x/x', replies y+/y-)
        loss = self.contrastive_loss(matrix, self.args.temperature).mean()
        if self.args.kl_coef > 0:
            kl = self.reference_kl(model, inputs, matrix)
            loss = loss + self.args.kl_coef * kl
            self._record({"kl": kl.detach().reshape(1)})
        if model.training:
            self._record({k: v.detach() for k, v in pair_metrics(matrix).items()})
            tokens = inputs["attention_mask"].sum().reshape(1)
            self._num_tokens += float(self.accelerator.gather_for_metrics(tokens).sum())
        return (loss, {"matrix": matrix}) if return_outputs else loss

    def reference_kl(self, model, inputs: dict[str, torch.Tensor], matrix: torch.Tensor) -> torch.Tensor:
        """mean(log ref - log policy) over the diagonal sequences (x, y+) and (x', y-): the replies were
        sampled from the reference, so this estimates KL(reference || policy)."""
        width = inputs["input_ids"].shape[-1]
        diagonal = {k: v.view(-1, 4, width)[:, [0, 3]].reshape(-1, width) for k, v in inputs.items()}
        with torch.no_grad():
            if self.reference_model is not None:
                self.reference_model.to(self.accelerator.device)
                reference = self.pair_log_probs(self.reference_model, diagonal)
            else:
                with self.accelerator.unwrap_model(model).disable_adapter():
                    reference = self.pair_log_probs(model, diagonal)
        policy = matrix.diagonal(dim1=1, dim2=2).reshape(-1)  # (B*2,), the same (x,y+),(x',y-) order
        return (reference - policy).mean()

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            self._metrics[key].append(float(self.accelerator.gather_for_metrics(value).float().mean()))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training step's log: the means since the last one
            logs.update({key: sum(v) / len(v) for key, v in self._metrics.items() if v})
            logs["num_tokens"] = self._num_tokens
            self._metrics.clear()
        super().log(logs, start_time)


class InfoNCETrainer(ContrastiveTrainer):
    contrastive_loss = staticmethod(infonce_loss)


class SAMITrainer(ContrastiveTrainer):
    contrastive_loss = staticmethod(sami_loss)


def _tokenized(dataset, tokenizer, max_length: int | None):
    """The pairs' token ids; pairs whose prompt leaves no room for a reply are dropped (logged)."""
    from mipo.core.errors import MipoError

    columns = dataset.column_names
    tokenized = dataset.map(tokenize_pair, fn_kwargs={"tokenizer": tokenizer, "max_length": max_length})
    tokenized = tokenized.remove_columns(columns)
    kept = tokenized.filter(lambda row: row["keep"]).remove_columns("keep")
    if len(kept) < len(tokenized):
        log.warning(
            "dropped %d pairs whose prompt fills max_length=%s", len(tokenized) - len(kept), max_length
        )
    if not len(kept):
        raise MipoError(f"every pair's prompt fills --max_length {max_length}: raise it")
    return kept
