"""``openai``: a judge behind any OpenAI-compatible chat endpoint (``vllm serve``, llama.cpp's server,
Ollama, hosted APIs), reached with the ``openai`` client at ``base_url=http://host:port/v1``.

Requests run in a bounded pool of threads; a failed request (connection refused, timeout, rate limit, 5xx)
is retried with exponential backoff, and when the tries run out the run stops with one line naming the URL.
Where the template asks for the verdict alone, the judge asks for ``logprobs``/``top_logprobs`` and reads
the verdict from the probabilities of the letters after ``[[``; from servers that return none (or refuse
the option) the verdict is parsed from the text.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np

from mipo.core.errors import ConfigError, MipoError
from mipo.evaluation.judges import JUDGES
from mipo.evaluation.judges.base import VERDICT_MODES, VERDICTS, Judge, JudgeRequest, Judgment
from mipo.evaluation.judges.template import Template
from mipo.evaluation.judges.verdicts import parse_verdict, verdict_from_logprobs

log = logging.getLogger(__name__)

TOP_LOGPROBS = 5


def _letter(token: str, after_brackets: bool) -> str | None:
    """The verdict letter a token stands for at this place (``A`` after ``[[``, or ``[[A`` as one token)."""
    text = token.lstrip()
    if not after_brackets:
        if not text.startswith("[["):
            return None
        text = text[2:].lstrip()
    if text[:1] in VERDICTS and text[1:2] in ("", "]", " "):
        return text[:1]
    return None


def _letter_logprobs(token: Any, after_brackets: bool) -> dict[str, float]:
    """Log-probability of each verdict letter at this token's place: the chosen token and its top
    alternatives (distinct token strings; " A" and "A" both count for A)."""
    candidates = {alt.token: alt.logprob for alt in token.top_logprobs or [] if alt.logprob is not None}
    candidates.setdefault(token.token, token.logprob)
    out: dict[str, float] = {}
    for text, logprob in candidates.items():
        letter = _letter(text, after_brackets)
        if letter is not None and logprob is not None:
            out[letter] = float(np.logaddexp(out.get(letter, -math.inf), logprob))
    return out


def verdict_from_completion(content: str, tokens: list[Any] | None) -> Judgment:
    """The judgment from a chat completion: from the top log-probabilities at the last verdict letter when
    the server returned them, else parsed from the text."""
    found: dict[str, float] = {}
    text_so_far = ""
    for token in tokens or []:
        after = text_so_far.rstrip().endswith("[[")
        if _letter(token.token, after) is not None:
            found = _letter_logprobs(token, after)
        text_so_far += token.token
    if found:
        return verdict_from_logprobs(found, raw_prefix=f"{content} | ")
    return Judgment(parse_verdict(content), content)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class EndpointJudge(Judge):
    def __init__(
        self,
        name: str,
        *,
        url: str,
        key_env: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        verdict: str = "auto",
        max_tokens: int | None = None,
    ):
        if verdict not in VERDICT_MODES:
            raise ConfigError(f"judge verdict must be one of {', '.join(VERDICT_MODES)}, got {verdict!r}")
        if concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ConfigError("judge concurrency must be >= 1, retries >= 0, timeout > 0 and backoff >= 0")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--judge-url must start with http:// or https://, got {url!r}")
        self.name, self.url = name, url.rstrip("/")
        self.key_env, self.concurrency, self.timeout = key_env, concurrency, timeout
        self.retries, self.backoff, self.verdict, self.max_tokens = retries, backoff, verdict, max_tokens
        self._client = self._make_client()
        self._logprobs_refused = False  # the server answered 400 to a request with logprobs once
        self._lock = threading.Lock()

    def _make_client(self) -> Any:
        try:
            import openai
        except ImportError:
            raise MipoError("the endpoint judge needs the openai client: pip install 'openai>=1'") from None
        key = "not-needed"  # local servers (vllm, llama.cpp, Ollama) accept any key
        if self.key_env:
            key = os.environ.get(self.key_env, "")
            if not key:
                raise ConfigError(
                    f"--judge-key-env {self.key_env}: the environment variable {self.key_env} is not set"
                )
        # Retries are ours (below), so that the last failure becomes one line naming the URL.
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=self.timeout)

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "openai",
            "url": self.url,
            "model": self.name,
            "verdict": self.verdict,
            "max_tokens": self.max_tokens,
        }

    def reads_logprobs(self, template: Template) -> bool:
        return self.verdict == "logprobs" or (self.verdict == "auto" and template.verdict_first)

    def stream(self, requests: list[JudgeRequest], template: Template) -> Iterator[tuple[int, Judgment]]:
        if not requests:
            return
        use_logprobs = self.reads_logprobs(template)
        limit = self.max_tokens or (16 if template.verdict_first else 1024)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mipo-judge")
        try:
            futures = {
                pool.submit(self._judge_one, template.fill(*request), use_logprobs, limit): index
                for index, request in enumerate(requests)
            }
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            # On an error (or a caller that stops early) drop the queued requests instead of waiting on them.
            pool.shutdown(wait=False, cancel_futures=True)

    def _judge_one(self, prompt: str, use_logprobs: bool, max_tokens: int) -> Judgment:
        with self._lock:
            use_logprobs = use_logprobs and not self._logprobs_refused
        completion = self._complete(prompt, use_logprobs, max_tokens)
        choice = completion.choices[0]
        content = choice.message.content or ""
        tokens = choice.logprobs.content if use_logprobs and choice.logprobs is not None else None
        return verdict_from_completion(content, tokens)

    def _complete(self, prompt: str, use_logprobs: bool, max_tokens: int) -> Any:
        import openai

        options: dict[str, Any] = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if use_logprobs else {}
        attempt = 0
        while True:
            try:
                return self._client.chat.completions.create(
                    model=self.name,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=0.0,
                    max_tokens=max_tokens,
                    **options,
                )
            except openai.BadRequestError as e:
                if not options:
                    raise MipoError(
                        f"judge endpoint {self.url} refused the request: {_first_line(e)}"
                    ) from None
                log.warning(
                    "judge endpoint %s refused logprobs (%s); parsing verdicts from text", self.url, e
                )
                with self._lock:
                    self._logprobs_refused = True
                options = {}  # ask again at once, without logprobs (not counted as a retry)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                where = f"the key in ${self.key_env}" if self.key_env else "no key (pass --judge-key-env VAR)"
                raise MipoError(f"judge endpoint {self.url} refused {where}: {_first_line(e)}") from None
            except openai.NotFoundError as e:
                raise MipoError(
                    f"judge endpoint {self.url} answered 404 ({_first_line(e)}): check that the URL ends in /v1 "
                    f"and that the server serves the model {self.name!r}"
                ) from None
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as e:
                if attempt == self.retries:
                    what = "timed out" if isinstance(e, openai.APITimeoutError) else _first_line(e)
                    raise MipoError(
                        f"judge endpoint {self.url} failed after {self.retries + 1} tries: {what} "
                        "(is the server running and reachable?)"
                    ) from None
                time.sleep(self.backoff * 2**attempt)
                attempt += 1
            except openai.APIStatusError as e:
                raise MipoError(f"judge endpoint {self.url}: {_first_line(e)}") from None


JUDGES.register("openai", EndpointJudge)
