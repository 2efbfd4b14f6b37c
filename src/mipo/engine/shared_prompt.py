"""DPO with one copy of each pair's prompt: the chosen and the rejected reply attend to the same prompt tokens.

TRL's ``DPOTrainer`` scores a pair as two rows, prompt + chosen and prompt + rejected, so every prompt token
goes through the model twice: in the reference pass, the forward and the backward. mipo packs a pair into
one row instead:

    tokens     p0 .. p(P-2)  p(P-1)  c0 .. c(C-1)   x      r0 .. r(R-1)
    positions  0  .. P-2     P-1     P  .. P+C-1    P-1    P  .. P+R-1
    branch     0  .. 0       1       1  .. 1        2      2  .. 2

``x`` is a copy of the prompt's last token. A token attends to the earlier tokens of branch 0 and of its own
branch. So the chosen reply sees the prompt and itself, as in TRL's chosen row; the rejected reply sees
p0 .. p(P-2), then ``x`` (the same token at the same position over the same keys as p(P-1): the same hidden
state at every layer) and itself, as in TRL's rejected row. Every reply token's log-prob is the one TRL's two
rows give (tested to 1e-5), for ``P - 1`` fewer tokens per pair: MIPO's pairs share long prompts (a user's
profile, a question) and answer them briefly, so a step does much less work (docs/benchmarks.md).

The trainer still sees TRL's layout: the collator writes each packed row twice (``2B`` rows: the chosen view,
then the rejected view, as TRL's collator orders them) with TRL's ``completion_mask`` per view and an
``attention_mask`` that counts the tokens of TRL's two rows (TRL's ``num_tokens`` keeps its meaning). The
model's forward (``share_prompts``) runs the first ``B`` rows once, with a 4-D attention mask built from
``pair_branch`` and the ``position_ids``, and splits the per-token outputs back into the two views. This
rests on how TRL 1.16's ``DPOTrainer`` calls the model (``tests/engine/test_shared_prompt.py`` holds it to TRL's own
log-probs); ``mipo.engine.trl_internals`` lists it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# attention implementations that take a custom 4-D mask (flash-attention kernels take none)
MASKED_ATTENTION = ("sdpa", "eager")
# the per-token fields of TRL's FusedCausalLMOutput
PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
IGNORE = -100


def unsupported_reason(trainer: Any) -> str | None:
    """Why this trainer's pairs cannot share their prompt, or None if they can."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    collator = trainer.data_collator
    if type(collator) is not DataCollatorForPreference:
        return f"the trainer's collator is {type(collator).__name__}, not TRL's text preference collator"
    if collator.truncation_mode != "keep_start":
        return f"truncation_mode={collator.truncation_mode!r} cuts the two rows' prompts differently"
    for model in _models(trainer):
        implementation = getattr(model.config, "_attn_implementation", None)
        if implementation not in MASKED_ATTENTION:
            return f"attention implementation {implementation!r} takes no custom attention mask"
    return None


def share_prompts(trainer: Any) -> bool:
    """Make ``trainer`` (TRL's ``DPOTrainer``) score each pair's prompt once; False (logged) where it cannot."""
    reason = unsupported_reason(trainer)
    if reason:
        log.info("each pair's prompt is scored twice, as TRL does: %s", reason)
        return False
    old = trainer.data_collator
    trainer.data_collator = SharedPromptCollator(
        pad_token_id=old.pad_token_id,
        max_length=old.max_length,
        truncation_mode=old.truncation_mode,
        pad_to_multiple_of=old.pad_to_multiple_of,
        return_tensors=old.return_tensors,
    )
    for model in _models(trainer):
        if not getattr(model.forward, "_mipo_shared_prompt", False):
            model.forward = _shared_prompt_forward(
                model.forward, model.config._attn_implementation, model.dtype
            )
    return True


def _models(trainer: Any) -> list[Any]:
    """The models whose (TRL-patched) forward the trainer calls: the policy's base model, and a reference copy."""
    from peft import PeftModel

    policy = trainer.accelerator.unwrap_model(trainer.model)
    models = [policy.get_base_model() if isinstance(policy, PeftModel) else policy]
    if getattr(trainer, "ref_model", None) is not None:
        models.append(trainer.accelerator.unwrap_model(trainer.ref_model))
    return models


def _trl_collator() -> type:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    return DataCollatorForPreference


def packed_pair(
    prompt: list[int], chosen: list[int], rejected: list[int], max_length: int | None
) -> dict[str, list[int]]:
    """One pair's packed row (see the module docstring), truncated as TRL's collator truncates each row."""
    if max_length is not None:  # keep_start: TRL keeps (prompt + reply)[:max_length] of each row
        prompt = prompt[:max_length]
        room = max_length - len(prompt)
        chosen, rejected = chosen[:room], rejected[:room]
    p, c, r = len(prompt), len(chosen), len(rejected)
    return {
        "input_ids": prompt + chosen + prompt[-1:] + rejected,
        "position_ids": list(range(p + c)) + list(range(p - 1, p + r)),
        "pair_branch": [0] * (p - 1) + [1] * (c + 1) + [2] * (r + 1),
        "chosen_mask": [0] * p + [1] * c + [0] * (r + 1),
        "rejected_mask": [0] * (p + c + 1) + [1] * r,
        # the tokens of TRL's two rows: prompt + chosen, prompt + rejected
        "chosen_tokens": [1] * (p + c) + [0] * (r + 1),
        "rejected_tokens": [1] * p + [0] * (c + 1) + [1] * r,
    }


@dataclass
class SharedPromptCollator(_trl_collator()):  # type: ignore[misc]
    """TRL's ``DataCollatorForPreference`` with each pair packed into one row, written twice (see above)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if any(not example["prompt_ids"] for example in examples):  # nothing to share: TRL's rows
            return super().torch_call(examples)
        packed = [
            packed_pair(e["prompt_ids"], e["chosen_ids"], e["rejected_ids"], self.max_length)
            for e in examples
        ]
        width = max(len(p["input_ids"]) for p in packed)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def stack(key: str, pad: int) -> torch.Tensor:
            return torch.tensor([p[key] + [pad] * (width - len(p[key])) for p in packed])

        ids, positions, branch = stack("input_ids", self.pad_token_id), stack("position_ids", 0), stack("pair_branch", -1)  # fmt: skip
        output = {
            "input_ids": torch.cat([ids, ids]),
            "attention_mask": torch.cat([stack("chosen_tokens", 0), stack("rejected_tokens", 0)]),
            "completion_mask": torch.cat([stack("chosen_mask", 0), stack("rejected_mask", 0)]),
            "position_ids": torch.cat([positions, positions]),
            "pair_branch": torch.cat([branch, branch]),
        }
        for name in ("ref_chosen_logps", "ref_rejected_logps"):
            if name in examples[0]:
                output[name] = torch.tensor([example[name] for example in examples])
        return output


def attention_mask(branch: Any, implementation: str, dtype: Any) -> Any:
    """The 4-D mask of packed rows: a token sees the earlier tokens of branch 0 and of its own branch.

    A padding position sees itself only (a row with no key would make attention's softmax NaN)."""
    import torch

    length = branch.size(1)
    query, key = branch.unsqueeze(2), branch.unsqueeze(1)
    earlier = torch.ones(length, length, dtype=torch.bool, device=branch.device).tril()
    allowed = earlier & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(length, dtype=torch.bool, device=branch.device)
    allowed = allowed.unsqueeze(1)  # (rows, 1 head dimension, queries, keys)
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=branch.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def _shared_prompt_forward(inner: Any, implementation: str, dtype: Any) -> Any:
    """The forward TRL calls, taking the collator's doubled rows: the model runs on one copy of each."""

    @functools.wraps(inner)
    def forward(*args: Any, pair_branch: Any = None, **kwargs: Any) -> Any:
        if pair_branch is None:  # TRL's own rows, or generation
            return inner(*args, **kwargs)
        import torch

        input_ids, labels = kwargs.pop("input_ids"), kwargs.pop("labels")
        positions = kwargs.pop("position_ids")
        kwargs.pop("attention_mask", None)
        half = input_ids.size(0) // 2
        chosen, rejected = labels[:half], labels[half:]
        out = inner(
            *args,
            input_ids=input_ids[:half],
            position_ids=positions[:half],
            attention_mask=attention_mask(pair_branch[:half], implementation, dtype),
            labels=torch.where(chosen != IGNORE, chosen, rejected),
            **kwargs,
        )
        views = (chosen[:, 1:] != IGNORE, rejected[:, 1:] != IGNORE)
        for name in PER_TOKEN_FIELDS:
            value = getattr(out, name, None)
            if value is not None:
                out[name] = torch.cat([torch.where(view, value, torch.zeros_like(value)) for view in views])
        return out

    forward._mipo_shared_prompt = True  # type: ignore[attr-defined]
    return forward
