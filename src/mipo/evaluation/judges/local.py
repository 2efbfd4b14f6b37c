"""``local``: a judge model mipo loads itself (a built-in name like ``smollm2-135m``, a Hub id or a folder).

Where the template asks for the verdict alone and each verdict letter is one token after ``[[``, the verdict
is read without generating: the judge's turn is forced to start with ``[[`` and one forward pass gives the
log-probabilities of ``A``, ``B`` and ``C`` as the next token (AlpacaEval's way of reading a verdict).
Otherwise the judge writes its answer with mipo's generation engine (greedy) and the verdict is parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mipo.core.errors import ConfigError
from mipo.evaluation.judges import JUDGES
from mipo.evaluation.judges.base import VERDICT_MODES, VERDICTS, Judge, JudgeRequest, Judgment
from mipo.evaluation.judges.template import Template
from mipo.evaluation.judges.verdicts import parse_verdict, verdict_from_logprobs

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FORCED_PREFIX = "[["


def letter_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int] | None:
    """The token id of each verdict letter right after ``[[``, or None when a letter is not one token there."""
    prefix = tokenizer.encode(FORCED_PREFIX, add_special_tokens=False)
    ids = {}
    for letter in VERDICTS:
        full = tokenizer.encode(FORCED_PREFIX + letter, add_special_tokens=False)
        if len(full) != len(prefix) + 1 or full[:-1] != prefix:
            return None
        ids[letter] = full[-1]
    return ids


class LocalJudge(Judge):
    def __init__(
        self,
        name: str,
        *,
        device: str | None = None,
        batch_size: int = 8,
        verdict: str = "auto",
        max_new_tokens: int | None = None,
    ):
        if verdict not in VERDICT_MODES:
            raise ConfigError(f"judge verdict must be one of {', '.join(VERDICT_MODES)}, got {verdict!r}")
        if batch_size < 1:
            raise ConfigError("judge batch_size must be at least 1")
        self.name, self.device, self.batch_size = name, device, batch_size
        self.verdict, self.max_new_tokens = verdict, max_new_tokens
        self._model: Any = None
        self._tokenizer: Any = None

    def identity(self) -> dict[str, Any]:
        from mipo.core.fingerprint import weights_identity
        from mipo.engine.models import resolve_model

        return {
            "kind": "local",
            "weights": weights_identity(resolve_model(self.name)),
            "verdict": self.verdict,
            "max_new_tokens": self.max_new_tokens,
        }

    def _load(self) -> None:
        if self._model is None:
            from mipo.engine.models import load_model

            self._model, self._tokenizer = load_model(self.name, device=self.device)

    def reads_logprobs(self, template: Template) -> bool:
        """Will verdicts come from the letter log-probabilities (else from generated text)?"""
        self._load()
        letters_ok = letter_token_ids(self._tokenizer) is not None
        if self.verdict == "logprobs" and not letters_ok:
            raise ConfigError(
                f"judge {self.name!r}: its tokenizer does not give each verdict letter one token after "
                f"'{FORCED_PREFIX}', so the verdict cannot be read from log-probabilities; use verdict=text"
            )
        if self.verdict == "auto":
            return template.verdict_first and letters_ok
        return self.verdict == "logprobs"

    def stream(self, requests: list[JudgeRequest], template: Template) -> Iterator[tuple[int, Judgment]]:
        if not requests:
            return
        use_logprobs = self.reads_logprobs(template)
        prompts = [template.fill(*r) for r in requests]
        # Longest first, so batches hold prompts of similar length (little padding) and memory peaks early.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            texts = [prompts[i] for i in batch]
            judgments = self._by_logprobs(texts) if use_logprobs else self._by_text(texts, template)
            yield from zip(batch, judgments)

    def _by_logprobs(self, prompts: list[str]) -> list[Judgment]:
        import torch

        tokenizer, model = self._tokenizer, self._model
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            + FORCED_PREFIX
            for p in prompts
        ]
        encoded = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        input_ids = encoded["input_ids"].to(model.device)  # (B, T), left-padded
        attention_mask = encoded["attention_mask"].to(model.device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                logits_to_keep=1,
            ).logits[:, -1]  # (B, V)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        letters = letter_token_ids(tokenizer)
        return [
            verdict_from_logprobs(
                {v: float(row[letters[v]]) for v in VERDICTS}, raw_prefix=f"{FORCED_PREFIX}: "
            )
            for row in logprobs
        ]

    def _by_text(self, prompts: list[str], template: Template) -> list[Judgment]:
        from mipo.engine.generation import generate_responses

        limit = self.max_new_tokens or (16 if template.verdict_first else 512)
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        replies = generate_responses(
            self._model,
            self._tokenizer,
            conversations,
            temperature=0.0,
            max_new_tokens=limit,
            batch_size=self.batch_size,
            progress=False,
        )
        return [Judgment(parse_verdict(r[0]), r[0]) for r in replies]

    def close(self) -> None:
        self._model = self._tokenizer = None


JUDGES.register("local", LocalJudge)
