"""The configs and trainers of the objectives that score a pair's replies under its prompt and its negative
prompt (``infonce``, ``sami``, ``cca``; ``guidance`` builds on ``PairTrainer`` in ``_guidance_trainer``): small
``transformers.Trainer`` subclasses whose ``compute_loss`` scores a pair's (prompt, reply) sequences in one
forward pass.

Imported only when one of these objectives trains (or ``mipo train --help`` lists its fields): it imports
transformers. The maths are in ``mipo.training.objectives._contrastive``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments

from mipo.training.objectives._contrastive import (
    REDUCTIONS,
    SEQUENCES,
    cca_loss,
    collate_pairs,
    infonce_loss,
    pair_metrics,
    sami_loss,
    sequence_log_probs,
    tokenize_pair,
)

log = logging.getLogger(__name__)


@dataclass
class PairConfig(TrainingArguments):
    """``TrainingArguments`` plus what every objective of these trainers reads: the sequence length."""

    max_length: int | None = field(
        default=1024, metadata={"help": "Longest (prompt, reply) sequence in tokens; replies are cut to fit."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        if self.max_length is not None and self.max_length < 2:
            return [f"max_length must be >= 2, got {self.max_length}"]
        return []


@dataclass
class ContrastiveConfig(PairConfig):
    """The contrastive objectives' own settings (InfoNCE, SAMI)."""

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

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.logprob_reduction not in REDUCTIONS:
            problems.append(
                f"logprob_reduction must be one of {', '.join(REDUCTIONS)}, got {self.logprob_reduction!r}"
            )
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.kl_coef < 0:
            problems.append(f"kl_coef must be >= 0, got {self.kl_coef}")
        return problems


@dataclass
class CCAConfig(PairConfig):
    """CCA's settings: β (TRL's ``beta``, as DPO's) and λ (``negative_weight``)."""

    beta: float = field(
        default=0.1,
        metadata={"help": "CCA's beta: scales D = log policy - log reference inside both sigmoids."},
    )
    negative_weight: float = field(
        default=1.0,
        metadata={
            "help": "CCA's lambda: weight of the term that lowers the chosen reply under the negative prompt. "
            "The positive term's weight is 1."
        },
    )

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.beta <= 0:
            problems.append(f"beta must be > 0, got {self.beta}")
        if self.negative_weight < 0:
            problems.append(f"negative_weight must be >= 0, got {self.negative_weight}")
        return problems


class PairTrainer(Trainer):
    """What the trainers of these objectives share: LoRA or full weights, the frozen reference, the tokenized
    pairs batched as ``sequences(args)`` lists them, and the logged metrics. Built as mipo builds every
    objective's trainer (see ``mipo.training.trainer.build_trainer``)."""

    def __init__(self, model, args, train_dataset, processing_class, peft_config=None, callbacks=None):
        from trl.trainer.utils import add_fused_lm_head

        # The reference is the starting model: with LoRA, the base (adapters off); with full weights, a copy.
        self.reference_model = (
            copy.deepcopy(model).eval().requires_grad_(False)
            if self.uses_reference(args) and peft_config is None
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
        sequences = self.sequences(args)
        per_pair = self.PAIR_COLUMNS

        def collate(rows):
            batch = collate_pairs(rows, pad_id, sequences)
            return batch | {c: torch.tensor([float(row[c]) for row in rows]) for c in per_pair}

        super().__init__(
            model=model,
            args=args,
            train_dataset=_tokenized(train_dataset, processing_class, args.max_length, keep=per_pair),
            processing_class=processing_class,
            data_collator=collate,
            callbacks=callbacks,
        )
        self.pad_token_id = (
            pad_id  # what the collator pads with (the eos token where the tokenizer has no pad)
        )
        self.model_accepts_loss_kwargs = (
            False  # the loss is a mean per pair: Trainer scales it for accumulation
        )
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._num_tokens = 0.0

    PAIR_COLUMNS: tuple[str, ...] = ()  # per-pair numbers of the dataset's rows batched as (B,) tensors

    @staticmethod
    def sequences(args) -> tuple[tuple[str, str], ...]:
        """The (prompt, reply) sequences of a pair in a batch, in order."""
        return SEQUENCES

    @staticmethod
    def uses_reference(args) -> bool:
        return True

    @contextlib.contextmanager
    def reference(self, model) -> Iterator:
        """The frozen starting model, without gradients: the LoRA model with its adapters off, or the copy."""
        with torch.no_grad():
            if self.reference_model is not None:
                self.reference_model.to(self.accelerator.device)
                yield self.reference_model
            else:
                with self.accelerator.unwrap_model(model).disable_adapter():
                    yield model

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            self._metrics[key].append(float(self.accelerator.gather_for_metrics(value).float().mean()))

    def _count_tokens(self, inputs: dict[str, torch.Tensor]) -> None:
        tokens = inputs["attention_mask"].sum().reshape(1)
        self._num_tokens += float(self.accelerator.gather_for_metrics(tokens).sum())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training step's log: the means since the last one
            logs.update({key: sum(v) / len(v) for key, v in self._metrics.items() if v})
            logs["num_tokens"] = self._num_tokens
            self._metrics.clear()
        super().log(logs, start_time)


class ContrastiveTrainer(PairTrainer):
    """InfoNCE or SAMI: a pair's four (prompt, reply) sequences scored in one forward pass."""

    contrastive_loss = staticmethod(infonce_loss)  # (B, 2, 2) matrices, temperature -> (B,) losses

    @staticmethod
    def uses_reference(args) -> bool:
        return args.kl_coef > 0

    def pair_log_probs(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(4B, T) sequences -> (4B,) reply log-probs, summed or averaged as ``--logprob_reduction`` says."""
        return reply_log_probs(model, inputs, self.args.logprob_reduction)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        matrix = self.pair_log_probs(model, inputs).view(-1, 2, 2)  # (B, prompts x/x', replies y+/y-)
        loss = self.contrastive_loss(matrix, self.args.temperature).mean()
        if self.args.kl_coef > 0:
            kl = self.reference_kl(model, inputs, matrix)
            loss = loss + self.args.kl_coef * kl
            self._record({"kl": kl.detach().reshape(1)})
        if model.training:
            self._record({k: v.detach() for k, v in pair_metrics(matrix).items()})
            self._count_tokens(inputs)
        return (loss, {"matrix": matrix}) if return_outputs else loss

    def reference_kl(self, model, inputs: dict[str, torch.Tensor], matrix: torch.Tensor) -> torch.Tensor:
        """mean(log ref - log policy) over the diagonal sequences (x, y+) and (x', y-): the replies were
        sampled from the reference, so this estimates KL(reference || policy)."""
        width = inputs["input_ids"].shape[-1]
        diagonal = {k: v.view(-1, 4, width)[:, [0, 3]].reshape(-1, width) for k, v in inputs.items()}
        with self.reference(model) as reference_model:
            reference = self.pair_log_probs(reference_model, diagonal)
        policy = matrix.diagonal(dim1=1, dim2=2).reshape(-1)  # (B*2,), the same (x,y+),(x',y-) order
        return (reference - policy).mean()


class InfoNCETrainer(ContrastiveTrainer):
    contrastive_loss = staticmethod(infonce_loss)


class SAMITrainer(ContrastiveTrainer):
    contrastive_loss = staticmethod(sami_loss)


class CCATrainer(PairTrainer):
    """CCA: each pair's chosen reply under x and under x', by the policy and by the frozen reference."""

    @staticmethod
    def sequences(args) -> tuple[tuple[str, str], ...]:
        return (("prompt", "chosen"), ("negative_prompt", "chosen"))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy = reply_log_probs(model, inputs, "sum").view(-1, 2)  # (B, prompts x/x')
        with self.reference(model) as reference_model:
            reference = reply_log_probs(reference_model, inputs, "sum").view(-1, 2)
        losses, chosen, rejected = cca_loss(policy, reference, self.args.beta, self.args.negative_weight)
        if model.training:
            chosen, rejected = chosen.detach(), rejected.detach()
            self._record(
                {
                    "rewards/chosen": chosen,
                    "rewards/rejected": rejected,
                    "rewards/margins": chosen - rejected,
                    "rewards/accuracies": (chosen > rejected).float(),
                    "logps/chosen": policy[:, 0].detach(),
                    "logps/rejected": policy[:, 1].detach(),
                }
            )
            self._count_tokens(inputs)
        loss = losses.mean()
        return (loss, {"log_probs": policy}) if return_outputs else loss


def reply_log_probs(model, inputs: dict[str, torch.Tensor], reduction: str) -> torch.Tensor:
    """(N, T) sequences -> (N,) reply log-probs under ``model`` (its forward patched with TRL's fused LM head:
    only the reply tokens are labelled, every other position scores 0), summed or averaged (``reduction``)."""
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    outputs = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        labels=labels,
        fused_lm_head=True,
        use_cache=False,
    )
    token_logps = outputs.log_probs  # (N, T-1)
    return sequence_log_probs(token_logps, inputs["completion_mask"][:, 1:], reduction)


def _tokenized(dataset, tokenizer, max_length: int | None, keep: tuple[str, ...] = ()):
    """The pairs' token ids (and the ``keep`` columns); pairs whose prompt leaves no room for a reply are dropped
    (logged)."""
    from mipo.core.errors import MipoError

    columns = [c for c in dataset.column_names if c not in keep]
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
