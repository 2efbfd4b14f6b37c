"""The config and trainer of ``guidance``: token-level distillation of context-aware decoding (CAD) into the
policy, with the frozen reference as the teacher (the maths: ``mipo.training.objectives._guidance``).

A batch holds, per pair, (x, y+) and (x', y+), and with ``--preserve`` (x', y-), whose term counts only the
pairs whose x' has no user context (the ``preserve`` column, from the pairs' ``negative_context``). The reference (the LoRA model
with its adapters off, or with ``--full`` a frozen copy of the starting model) scores them all without
gradients; the policy scores (x, y+) (and (x', y-)). Only the columns from the first one that predicts a reply
token are projected through the vocabulary (``logits_to_keep``), and the teacher, the KL and the weights are
computed on the (reply tokens, vocabulary) logits of those positions.

With ``--unlikelihood W`` the policy also answers the pairs' prompts (with the context) greedily every
``--unlikelihood_every`` optimizer steps, from the first; each step then scores a batch of those replies that
repeat an n-gram (``--unlikelihood_ngram``, 4 by default) and adds W x their unlikelihood (``_guidance.unlikelihood_loss``).
With ``--unlikelihood_pmi M`` the reference also scores those replies under each prompt's negative prompt (one
without any context where the pairs hold one) and only the repeated tokens whose PMI with the context exceeds
M nats are pushed down (``_guidance.context_loop_mask``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mipo.engine.cad import plausibility_problems, token_kl, written_before
from mipo.training.objectives._contrastive import collate_pairs
from mipo.training.objectives._contrastive_trainer import PairConfig, PairTrainer
from mipo.training.objectives._guidance import (
    REPEAT_NGRAM,
    context_loop_mask,
    guidance_loss,
    repeated_ngram_mask,
    token_pmi,
    unlikelihood_loss,
)

OWN_REPLY = (("prompt", "chosen"), ("negative_prompt", "chosen"))  # y+ under x (policy, teacher) and x'
NEGATIVE_REPLY = ("negative_prompt", "rejected")  # y- under x': the preservation term's sequence


@dataclass
class GuidanceConfig(PairConfig):
    """``guidance``'s settings: the teacher's CAD strength, the preservation term, the decisions' weight."""

    cad_alpha: float = field(
        default=1.0,
        metadata={
            "help": "Teacher strength A (also --cad-alpha): the teacher is softmax((1+A) l(.|x) - A l(.|x')) from "
            "the frozen reference, as mipo sample/eval --cad-alpha decode. A >= 0; 0 distils the reference itself."
        },
    )
    cad_plausibility: float | None = field(
        default=None,
        metadata={
            "help": "The teacher's adaptive plausibility constraint TAU in (0, 1] (also --cad-plausibility): only "
            "tokens with p(v|x) >= TAU * max p(.|x) under the reference keep the teacher's mass, as mipo "
            "sample/eval --cad-plausibility decode. Default: none."
        },
    )
    cad_lift_once: bool = field(
        default=False,
        metadata={
            "help": "The teacher lifts a token only until the reply has written it: after a token's first "
            "occurrence in the reply only a negative contrast stays (the context may forbid a word everywhere, "
            "and asks for it once). Plain CAD lifts the user's start word or name at every position, and the "
            "model learns to repeat it."
        },
    )
    preserve: float = field(
        default=0.0,
        metadata={
            "help": "Weight W of KL(reference || policy) per token under the negative prompt, along its own "
            "reply (the pair's rejected reply): keeps what the model does without the context. 0: off."
        },
    )
    decision_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the positions where the teacher's top token differs from the policy's (the "
            "others weigh 1; the loss stays a per-token mean). >= 1."
        },
    )

    unlikelihood: float = field(
        default=0.0,
        metadata={
            "help": "Weight W of the unlikelihood of the policy's own repeats (Welleck et al., 2019): the policy "
            "answers the pairs' prompts greedily as it trains, and in its replies the tokens of every n-gram "
            "already written are pushed down, -log(1 - p). 0: off."
        },
    )
    unlikelihood_every: int = field(
        default=10,
        metadata={
            "help": "With --unlikelihood: optimizer steps between two rounds of the policy's own replies."
        },
    )
    unlikelihood_tokens: int = field(
        default=64,
        metadata={"help": "With --unlikelihood: the longest of the policy's own replies, in new tokens."},
    )
    unlikelihood_ngram: int = field(
        default=REPEAT_NGRAM,
        metadata={
            "help": "With --unlikelihood: the n of the repeated n-grams (in tokens) whose tokens are pushed "
            "down. 4 is Welleck et al.'s; a larger n leaves ordinary repeated phrases alone and still catches "
            "loops."
        },
    )
    unlikelihood_pmi: float | None = field(
        default=None,
        metadata={
            "help": "With --unlikelihood: push down only the repeated tokens the context lifts, those whose PMI "
            "with the context under the reference, log p(y_t|x, y<t) - log p(y_t|x', y<t), exceeds this many "
            "nats (x' the pair's negative prompt; one without any context where the pairs hold one): the loops "
            "a context causes ('Okay okay okay' after 'start with Okay'), not the repeats the model writes "
            "anyway (0: every repeat the context makes likelier). Default: every repeated token."
        },
    )

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.unlikelihood >= 0:
            problems.append(f"unlikelihood must be >= 0, got {self.unlikelihood}")
        if self.unlikelihood_every < 1:
            problems.append(f"unlikelihood_every must be >= 1, got {self.unlikelihood_every}")
        if self.unlikelihood_ngram < 1:
            problems.append(f"unlikelihood_ngram must be >= 1, got {self.unlikelihood_ngram}")
        if self.unlikelihood_pmi is not None and not math.isfinite(self.unlikelihood_pmi):
            problems.append(f"unlikelihood_pmi must be a finite number of nats, got {self.unlikelihood_pmi}")
        if self.unlikelihood_tokens <= max(self.unlikelihood_ngram, 1):  # no room for an n-gram twice
            problems.append(
                f"unlikelihood_tokens must be > unlikelihood_ngram ({self.unlikelihood_ngram}), "
                f"got {self.unlikelihood_tokens}"
            )
        if not self.cad_alpha >= 0:  # NaN too
            problems.append(f"cad_alpha must be >= 0, got {self.cad_alpha}")
        problems += plausibility_problems(self.cad_plausibility, self.cad_alpha)  # as sample/eval check it
        if not self.preserve >= 0:
            problems.append(f"preserve must be >= 0, got {self.preserve}")
        if not self.decision_weight >= 1:
            problems.append(f"decision_weight must be >= 1, got {self.decision_weight}")
        return problems


class GuidanceTrainer(PairTrainer):
    """Per batch: the teacher from the reference's logits under x and x', the policy's under x, their KL."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._decisions = torch.zeros(2, dtype=torch.long)  # (taken, decided) since the last log
        # --unlikelihood: the pairs' prompts (with the context) and each one's negative prompt, this process's
        # share (read at the first round), and the policy's own replies to them that repeat an n-gram (that the
        # context lifts, with --unlikelihood_pmi), with the step they were written at
        self._own_prompts: list[tuple[list[int], list[int]]] | None = None
        self._own_repeats: list[dict] = []
        self._own_replies_step: int | None = None
        self._own_cursor = 0

    @staticmethod
    def sequences(args) -> tuple[tuple[str, str], ...]:
        return OWN_REPLY + ((NEGATIVE_REPLY,) if args.preserve > 0 else ())

    PAIR_COLUMNS = ("preserve",)  # 1 where the pair's negative prompt has no user context, else 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        preserved = inputs.pop("preserve")  # (B,)
        with_context, without, *negative_reply = sequence_groups(inputs, len(self.sequences(self.args)))
        with self.reference(model) as reference_model:
            reference = split_replies(reply_logits(reference_model, [with_context, without, *negative_reply]))
        policy = split_replies(reply_logits(model, [with_context, *negative_reply]))
        written = written_in_replies(with_context, policy[0].shape[-1]) if self.args.cad_lift_once else None
        loss, kl, teacher_top = guidance_loss(
            policy[0],
            reference[0],
            reference[1],
            self.args.cad_alpha,
            self.args.decision_weight,
            self.args.cad_plausibility,
            written,
        )
        metrics = {"kl": kl.detach().mean().reshape(1)}
        if negative_reply:
            kl_tokens = token_kl(torch.log_softmax(reference[2].float(), dim=-1), policy[1])
            preserve_kl = preserved_mean(kl_tokens, preserved, negative_reply[0])
            loss = loss + self.args.preserve * preserve_kl
            metrics["preserve_kl"] = preserve_kl.detach().reshape(1)
        if self.args.unlikelihood > 0 and model.training:
            repeats = self._own_repeats_loss(model)
            loss = loss + self.args.unlikelihood * repeats
            metrics["unlikelihood"] = repeats.detach().reshape(1)
        if model.training:
            self._record(metrics)
            self._record_decisions(policy[0], reference[0], teacher_top)
            self._count_tokens(inputs)
        return (loss, {"kl": kl}) if return_outputs else loss

    def _own_repeats_loss(self, model) -> torch.Tensor:
        """The unlikelihood of the repeated n-grams in a batch of the policy's own replies (0 when none
        repeats); the replies are rewritten every ``unlikelihood_every`` optimizer steps."""
        step = self.state.global_step
        if self._own_replies_step is None or step - self._own_replies_step >= self.args.unlikelihood_every:
            self._own_repeats = self._write_own_replies(model)
            self._own_replies_step, self._own_cursor = step, 0
        if not self._own_repeats:
            return torch.zeros((), device=self.accelerator.device)
        pool = self._own_repeats
        count = min(self.args.per_device_train_batch_size, len(pool))
        rows = [pool[(self._own_cursor + i) % len(pool)] for i in range(count)]
        self._own_cursor += len(rows)
        batch = collate_pairs(rows, self.pad_token_id, (("prompt", "reply"),))
        logits, _ = reply_logits(model, [{k: v.to(self.accelerator.device) for k, v in batch.items()}])
        targets = torch.tensor([t for row in rows for t in row["reply_ids"]], device=logits.device)
        mask = torch.tensor([m for row in rows for m in row["mask"]], device=logits.device)
        return unlikelihood_loss(logits, targets, mask)

    def _write_own_replies(self, model) -> list[dict]:
        """The policy's greedy replies to this process's prompts, kept where an n-gram repeats (one the
        context lifts, with ``--unlikelihood_pmi``): each with its prompt's and negative prompt's ids, its
        token ids (up to its end of turn) and which tokens to push down. Logs the share of the replies that
        repeat (``own_repeating``) and, with ``--unlikelihood_pmi``, the share kept (``own_context_loops``)."""
        from mipo.engine.stops import stop_token_ids

        if self._own_prompts is None:
            rank, world = self.accelerator.process_index, self.accelerator.num_processes
            self._own_prompts = prompts_and_negatives(self.train_dataset)[rank::world]
        policy = self.accelerator.unwrap_model(model)
        ends = stop_token_ids(policy, self.processing_class)
        pad_id, device, was_training = self.pad_token_id, self.accelerator.device, policy.training
        kept, chunk = [], 16
        policy.eval()
        try:
            with torch.no_grad():
                for first in range(0, len(self._own_prompts), chunk):
                    part = self._own_prompts[first : first + chunk]
                    prompts = [prompt for prompt, _ in part]
                    width = max(map(len, prompts))
                    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
                    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
                    for i, ids in enumerate(prompts):  # left-padded, as generation reads a batch
                        input_ids[i, width - len(ids) :] = torch.tensor(ids)
                        attention_mask[i, width - len(ids) :] = 1
                    output = policy.generate(
                        input_ids=input_ids.to(device),
                        attention_mask=attention_mask.to(device),
                        max_new_tokens=self.args.unlikelihood_tokens,
                        do_sample=False,
                        pad_token_id=pad_id,
                        eos_token_id=ends,
                    )
                    for (ids, negative), new in zip(part, output[:, width:].tolist()):
                        end = next((i for i, t in enumerate(new) if t in ends), len(new) - 1)
                        reply = new[: end + 1]
                        mask = repeated_ngram_mask(reply, self.args.unlikelihood_ngram)
                        if any(mask):
                            kept.append(
                                {
                                    "prompt_ids": ids,
                                    "negative_prompt_ids": negative,
                                    "reply_ids": reply,
                                    "mask": mask,
                                }
                            )
                repeating = len(kept)
                if self.args.unlikelihood_pmi is not None:
                    kept = [row for row in self._context_loops(model, kept, chunk) if any(row["mask"])]
        finally:
            policy.train(was_training)
        prompts = max(len(self._own_prompts), 1)
        shares = {"own_repeating": repeating / prompts}
        if self.args.unlikelihood_pmi is not None:
            shares["own_context_loops"] = len(kept) / prompts
        self._record({key: torch.tensor([value], device=device) for key, value in shares.items()})
        return kept

    def _context_loops(self, model, rows: list[dict], chunk: int) -> list[dict]:
        """``rows`` with each mask narrowed to the repeated tokens whose PMI with the context, under the
        reference along the reply (its prompt against its negative prompt), exceeds ``--unlikelihood_pmi``."""
        sequences = (("prompt", "reply"), ("negative_prompt", "reply"))
        narrowed = []
        for first in range(0, len(rows), chunk):
            part = rows[first : first + chunk]
            batch = collate_pairs(part, self.pad_token_id, sequences)
            batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
            with self.reference(model) as reference_model:
                with_context, without = split_replies(
                    reply_logits(reference_model, sequence_groups(batch, 2))
                )
            targets = torch.tensor([t for row in part for t in row["reply_ids"]], device=with_context.device)
            pmi = token_pmi(with_context, without, targets).split([len(row["reply_ids"]) for row in part])
            for row, values in zip(part, pmi):
                mask = context_loop_mask(row["mask"], values.tolist(), self.args.unlikelihood_pmi)
                narrowed.append(row | {"mask": mask})
        return narrowed

    def _record_decisions(self, policy, with_context, teacher_top) -> None:
        """CAD's decisions (positions where the teacher's top token is not the reference's), and how many of
        them the policy's top token takes: ``decisions`` in the log is their share since the last log."""
        with torch.no_grad():
            decided = teacher_top != with_context.argmax(dim=-1)
            taken = decided & (policy.argmax(dim=-1) == teacher_top)
        counts = self.accelerator.gather_for_metrics(torch.stack([taken.sum(), decided.sum()]).reshape(1, 2))
        self._decisions += counts.reshape(-1, 2).sum(dim=0).cpu()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            taken, decided = self._decisions.tolist()
            if decided:
                logs["decisions"] = taken / decided
            self._decisions.zero_()
        super().log(logs, start_time)


def preserved_mean(
    values: torch.Tensor, preserved: torch.Tensor, group: dict[str, torch.Tensor]
) -> torch.Tensor:
    """(R,) per-token values along a group's replies (pair by pair) -> their mean over the pairs whose
    ``preserved`` weight is 1 (0 when no pair of the batch is)."""
    tokens_per_pair = group["completion_mask"][:, 1:].sum(dim=-1)
    weights = torch.repeat_interleave(
        preserved.to(values.device, values.dtype), tokens_per_pair.to(values.device)
    )
    return (weights * values).sum() / weights.sum().clamp(min=1.0)


def prompts_and_negatives(dataset) -> list[tuple[list[int], list[int]]]:
    """The tokenized pairs' distinct prompts, in order, each with a negative prompt: that of its first pair
    whose negative prompt has no user context (``preserve`` 1, as in mixed pairs), else of its first pair."""
    negatives: dict[tuple[int, ...], tuple[list[int], bool]] = {}
    preserves = dataset["preserve"] if "preserve" in dataset.column_names else [0] * len(dataset)
    for prompt, negative, preserve in zip(dataset["prompt_ids"], dataset["negative_prompt_ids"], preserves):
        key = tuple(prompt)
        if key not in negatives or (preserve and not negatives[key][1]):
            negatives[key] = (list(negative), bool(preserve))
    return [(list(prompt), negative) for prompt, (negative, _) in negatives.items()]


def written_in_replies(group: dict[str, torch.Tensor], vocab_size: int) -> torch.Tensor:
    """A batch of right-padded sequences -> (R, V) bool at the R positions that predict a reply token (as
    ``reply_logits`` orders them): the tokens that position's reply wrote before it."""
    replies = group["completion_mask"][:, 1:].bool()
    return written_before(group["input_ids"][:, 1:][replies], replies.sum(dim=-1).tolist(), vocab_size)


def sequence_groups(inputs: dict[str, torch.Tensor], count: int) -> list[dict[str, torch.Tensor]]:
    """A batch of ``count`` sequences per pair (pair by pair) -> ``count`` batches of one sequence per pair."""
    width = inputs["input_ids"].shape[-1]
    return [{k: v.view(-1, count, width)[:, i] for k, v in inputs.items()} for i in range(count)]


def reply_logits(model, groups: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, list[int]]:
    """Batches of right-padded (B, T) sequences, scored in one forward pass -> the (R, V) next-token logits at the
    R positions that predict a reply token (group by group, row by row, token by token) and each group's R.

    Only the last columns from the first that predicts a reply token are projected through the vocabulary
    (``logits_to_keep`` as a count, which every transformers 5 causal LM takes), and the columns past the
    longest sequence are dropped."""
    batch = {k: torch.cat([g[k] for g in groups]) for k in ("input_ids", "attention_mask", "completion_mask")}
    width = int(batch["attention_mask"].sum(dim=-1).max())
    batch = {k: v[:, :width] for k, v in batch.items()}
    predicts_reply = torch.zeros_like(batch["completion_mask"], dtype=torch.bool)
    predicts_reply[:, :-1] = batch["completion_mask"][:, 1:].bool()
    first = int(predicts_reply.any(dim=0).nonzero()[0])
    outputs = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=width - first,
        use_cache=False,
    )
    logits = outputs.logits[predicts_reply[:, first:]]  # (R, V)
    return logits, [int(g["completion_mask"][:, 1:].sum()) for g in groups]


def split_replies(scored: tuple[torch.Tensor, list[int]]) -> list[torch.Tensor]:
    logits, counts = scored
    return list(logits.split(counts))
