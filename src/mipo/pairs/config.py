"""``mipo pairs``'s settings (``PairsConfig``) and what a run reports (``PairsSummary``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipo.core.config import option, require
from mipo.engine.cad import CAD_SETTINGS, LIFT_ONCE_HELP, PLAUSIBILITY_HELP, cad_problems, cad_settings
from mipo.engine.generation import GenerationJob, GenerationStats
from mipo.pairs.strategies import STRATEGIES, chosen_contrast

Conversation = list[dict[str, str]]


SELECTIONS = ("first", "pmi")


REJECTED_REPLIES = ("lowest", "negative")


CAD_REJECTED = ("without-context", "with-context")

DEFAULT_CAD_ALPHA = 1.0


@dataclass
class PairsConfig(GenerationJob):
    strategy: str = option(
        "random", "how the negative prompt x' is made (mipo.pairs.strategies)", choices=STRATEGIES
    )
    group_field: str | None = option(None, "record field whose value keeps x' in x's group (random)")
    drop_system: bool = option(False, "incomplete: also remove the system text from x'")
    samples: int = option(1, "responses (positives) per prompt")
    negatives: int = option(1, "negatives per positive: samples*negatives pairs per prompt")
    marginal_prompt: str = option("", "marginal: the text of the neutral user turn x' (default: empty)")
    select: str = option(
        "first",
        "first: every sample makes pairs; pmi: of the --samples candidates, the one with the highest PMI "
        "against the negative prompts (log π(y|x) − log mean π(y|x')) is chosen",
        choices=SELECTIONS,
    )
    rejected: str = option(
        "negative",
        "--select pmi: the rejected reply is the negative prompt's reply (negative) or the lowest-PMI "
        "candidate (lowest)",
        choices=REJECTED_REPLIES,
    )
    cad_alpha: float | None = option(
        None,
        "cad: the chosen reply decodes from (1+A) log p(.|x,c) - A log p(.|x), A >= 0 (default 1; hf backend)",
    )
    cad_plausibility: float | None = option(None, "cad: " + PLAUSIBILITY_HELP)
    cad_lift_once: bool = option(False, "cad: " + LIFT_ONCE_HELP)
    cad_rejected: str = option(
        "without-context",
        "cad: the rejected reply is the plain reply to the prompt without its context (without-context) or "
        "with it (with-context: the pair then differs only by CAD's tilt)",
        choices=CAD_REJECTED,
    )

    def __post_init__(self) -> None:
        problems = self.problems(counts=("samples", "negatives"))
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.select not in SELECTIONS:
            problems.append(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if self.rejected not in REJECTED_REPLIES:
            problems.append(f"rejected must be one of {', '.join(REJECTED_REPLIES)}, got {self.rejected!r}")
        if self.select == "pmi" and self.samples < 2:
            problems.append(
                f"--select pmi ranks candidates: --samples must be at least 2, got {self.samples}"
            )
        if self.select == "pmi" and self.backend != "hf":
            problems.append("--select pmi scores replies with the model itself: it needs --backend hf")
        problems += self._cad_problems()
        require(problems)

    @property
    def contrasts_chosen(self) -> bool:
        """Whether the strategy's chosen replies decode with CAD (``cad``)."""
        return self.strategy in STRATEGIES and chosen_contrast(STRATEGIES.get(self.strategy)) is not None

    def _cad_problems(self) -> list[str]:
        if not self.contrasts_chosen:
            given = [
                flag
                for flag, unset in (
                    ("--cad-alpha", self.cad_alpha is None),
                    ("--cad-plausibility", self.cad_plausibility is None),
                    ("--cad-lift-once", not self.cad_lift_once),
                    ("--cad-rejected", self.cad_rejected == CAD_REJECTED[0]),
                )
                if not unset
            ]
            return [f"{given[0]} is a setting of --strategy cad, not {self.strategy!r}"] if given else []
        if self.cad_alpha is None:
            self.cad_alpha = DEFAULT_CAD_ALPHA
        problems = cad_problems(
            self.cad_alpha, self.backend, plausibility=self.cad_plausibility, lift_once=self.cad_lift_once
        )
        if self.cad_rejected not in CAD_REJECTED:
            problems.append(
                f"cad_rejected must be one of {', '.join(CAD_REJECTED)}, got {self.cad_rejected!r}"
            )
        if self.select == "pmi" and self.cad_rejected == "with-context":
            problems.append(
                "--select pmi ranks replies by PMI against the negative prompt: with --cad-rejected "
                "with-context that is the prompt itself (PMI 0); use --cad-rejected without-context"
            )
        return problems

    def fingerprint(self) -> dict[str, Any]:
        """As ``GenerationJob.fingerprint``; ``rejected`` only counts with ``--select pmi`` (it changes
        nothing otherwise), and ``select: first`` is left out, so runs from before these settings resume; so
        are the ``cad_*`` settings except with ``--strategy cad``."""
        settings = {k: v for k, v in super().fingerprint().items() if k not in CAD_SETTINGS}
        if self.select == "first":
            settings.pop("select", None)
            settings.pop("rejected", None)
        if not self.contrasts_chosen:  # cad's settings (set only with --strategy cad)
            settings.pop("cad_rejected", None)
            return settings
        return settings | cad_settings(self.cad_alpha, self.cad_plausibility, self.cad_lift_once)


@dataclass
class PairsSummary:
    path: Path
    pairs: int = 0
    prompts: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    stats: GenerationStats = field(default_factory=GenerationStats)

    def line(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n) or "none"
        return (
            f"wrote {self.pairs} pairs from {self.prompts} prompts to {self.path}; dropped: {dropped}; "
            f"{self.stats.new_tokens} new tokens at {self.stats.tokens_per_second:.1f} tokens/s"
        )
