"""The judge's command-line settings, for a stage config to include (``mipo eval --task judge:SOURCE``).

A config dataclass that inherits ``JudgeSettings`` gets the flags ``--judge``, ``--judge-url``,
``--judge-key-env``, ``--judge-template`` and the rest; ``settings.make()`` builds the judge and
``settings.judge_problems()`` lists the invalid settings in the config's usual way.
"""

from __future__ import annotations

from dataclasses import dataclass

from mipo.core.config import option
from mipo.engine.models import DEFAULT_MODEL
from mipo.evaluation.judges.base import VERDICT_MODES, Judge


@dataclass
class JudgeSettings:
    judge: str = option(
        DEFAULT_MODEL,
        "judge model: a built-in name, a folder or a Hub id; with --judge-url, the served model name",
    )
    judge_url: str | None = option(
        None, "OpenAI-compatible endpoint of the judge, e.g. http://127.0.0.1:8000/v1"
    )
    judge_key_env: str | None = option(
        None, "name of the environment variable holding the endpoint's API key"
    )
    judge_template: str = option(
        "personalization", "judge prompt: personalization, helpfulness, or a text file with placeholders"
    )
    judge_verdict: str = option(
        "auto", "read verdicts from letter log-probabilities or parse them from text", choices=VERDICT_MODES
    )
    judge_concurrency: int = option(8, "endpoint requests in flight")
    judge_timeout: float = option(60.0, "seconds per endpoint request")
    judge_retries: int = option(3, "retries of a failed endpoint request, with exponential backoff")
    judge_batch_size: int = option(8, "prompts per forward pass of a local judge")
    judge_cache: bool = option(True, "reuse and record verdicts under $MIPO_CACHE/judge")

    def judge_problems(self) -> list[str]:
        problems = []
        if self.judge_verdict not in VERDICT_MODES:
            problems.append(f"judge_verdict must be one of {', '.join(VERDICT_MODES)}")
        for name in ("judge_concurrency", "judge_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.judge_retries < 0 or self.judge_timeout <= 0:
            problems.append("judge_retries must be >= 0 and judge_timeout > 0")
        if self.judge_key_env and not self.judge_url:
            problems.append("judge_key_env needs judge_url (a local judge takes no key)")
        if self.judge_url and not self.judge_url.startswith(("http://", "https://")):
            problems.append(f"judge_url must start with http:// or https://, got {self.judge_url!r}")
        return problems

    def make(self, device: str | None = None) -> Judge:
        """The judge these settings name; ``device`` places a local judge (an endpoint judge has none)."""
        from mipo.evaluation.judges import make_judge

        if self.judge_url:
            return make_judge(
                self.judge,
                url=self.judge_url,
                key_env=self.judge_key_env,
                concurrency=self.judge_concurrency,
                timeout=self.judge_timeout,
                retries=self.judge_retries,
                verdict=self.judge_verdict,
            )
        return make_judge(
            self.judge, batch_size=self.judge_batch_size, verdict=self.judge_verdict, device=device
        )
