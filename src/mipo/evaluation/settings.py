"""``mipo eval``'s settings: what to score (``EvalConfig``) and how (``ScoringSettings``), checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipo.core.config import option, require
from mipo.engine.backends import BACKENDS
from mipo.engine.backends.vllm_settings import vllm_problems
from mipo.engine.cad import LIFT_ONCE_HELP, PLAUSIBILITY_HELP
from mipo.engine.dtypes import DTYPE_HELP, dtype_problems
from mipo.engine.models import DEFAULT_MODEL
from mipo.evaluation.judges.settings import JudgeSettings
from mipo.tasks import CONTEXT_MODES, Task, split_task_list, task_list_help
from mipo.tasks.pmi import PMI_AGAINST

Rows = list[dict[str, Any]]


Runs = dict[str, dict[str, dict[int, Rows]]]  # task name -> role -> seed -> one row per item


@dataclass
class ScoringSettings:
    """What ``mipo eval`` and ``mipo pmi`` share: the models compared, the sampling, the statistics."""

    model: str = option(
        DEFAULT_MODEL, "the model to evaluate: a built-in name, a folder (LoRA adapters too) or a Hub id"
    )
    baseline: str | None = option(
        None, "a second model evaluated on the same items and seeds; reports the paired difference"
    )
    reference: str | None = option(
        None,
        "pmi: the reference model π_ref (default: the baseline, else a LoRA adapter's base, else the model)",
    )
    out: str = option("runs/eval", "output folder: results.json and examples/*.jsonl")
    limit: int | None = option(None, "evaluate the first N items of each task")
    seeds: list = option([0], "sampling seeds; each repeats the sampling, per-item scores average over them")
    temperature: float = option(0.1, "sampling temperature (the paper's 0.1); 0 is greedy")
    top_p: float = option(0.9, "nucleus sampling mass (the paper's 0.9)")
    greedy: bool = option(False, "greedy decoding (same as --temperature 0)")
    max_new_tokens: int = option(256, "longest reply, in tokens")
    batch_size: int = option(64, "prompts generated together (a batch is saved when it ends: --resume)")
    workers: int | None = option(
        None, "hf on a CPU: decode workers of one thread each (default: one per core; 1 = this process only)"
    )
    score_batch_size: int = option(8, "sequences scored together (pmi, --mc-mode loglik)")
    k: int = option(8, "pmi: other prompts whose likelihood of a response estimates its marginal")
    prompts: str | None = option(
        None,
        "pmi: held-out prompts: a prompt-records or pairs file, or a task name (see --task) for its test "
        "items (default: prefs)",
    )
    score_pairs: bool = option(False, "pmi with a pairs file: also score its chosen and rejected responses")
    against: str = option(
        "prompts",
        "pmi: the PMI of a reply against other prompts (log π(y|x) − log mean_k π(y|x'_k)), or against the "
        "user's context (log π(y|x,c) − log π(y|x): the items need a context)",
        choices=PMI_AGAINST,
    )
    train_split: float = option(0.2, "gsm8k: share of questions held apart as MIPO prompts (never evaluated)")
    context_mode: str = option(
        "system",
        "where a record's user context goes: a system message, or before the question",
        choices=CONTEXT_MODES,
    )
    preference_types: list = option(
        [], "prefs (and pmi's default prompts): only these preference types (default: all)"
    )
    n_bootstrap: int = option(10_000, "bootstrap resamples for the confidence intervals")
    confidence: float = option(0.95, "confidence level of the intervals")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cuda when available)")
    dtype: str = option("auto", DTYPE_HELP)
    backend: str = option(
        "hf", "generation engine (mipo.engine.backends; log-prob scoring needs hf)", choices=BACKENDS
    )
    vllm: dict = option({}, "backend vllm: vllm.LLM's engine settings, under vLLM's names (docs/gpu.md)")
    overwrite: bool = option(False, "replace an existing results.json in --out")
    resume: bool = option(
        False,
        "continue an evaluation that was interrupted: generated batches saved in OUT/partial/ are read back",
    )
    cache_baseline: bool = option(
        True,
        "reuse the baseline's scored outputs from an earlier run with the same model, items and settings "
        "($MIPO_CACHE/eval): comparing several models with one base model runs the base model once",
    )
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        require(self.problems())

    def problems(self) -> list[str]:
        """Every invalid setting, collected (subclasses add theirs)."""
        problems = []
        try:
            self.seeds = [int(s) for s in self.seeds]
        except (TypeError, ValueError):
            problems.append(f"seeds must be integers, got {self.seeds!r}")
        if not self.seeds:
            problems.append("seeds: give at least one seed")
        if self.limit is not None and self.limit < 1:
            problems.append("limit must be at least 1")
        if self.temperature < 0:
            problems.append("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        for name in ("max_new_tokens", "batch_size", "score_batch_size", "k", "n_bootstrap"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if not 0 < self.confidence < 1:
            problems.append("confidence must be in (0, 1)")
        if not 0 <= self.train_split < 1:
            problems.append("train_split must be in [0, 1)")
        problems += vllm_problems(self.vllm, self.backend)
        from mipo.tasks.prefs import PREFERENCE_TYPES

        problems += dtype_problems(self.dtype, self.device, self.backend)
        unknown = [t for t in self.preference_types if t not in PREFERENCE_TYPES]
        if unknown:
            problems.append(
                f"preference_types: unknown {', '.join(unknown)} (choose from {', '.join(PREFERENCE_TYPES)})"
            )
        return problems

    @property
    def sampling_temperature(self) -> float:
        return 0.0 if self.greedy else self.temperature


@dataclass
class EvalConfig(ScoringSettings, JudgeSettings):
    task: str = option("prefs", f"task(s), comma-separated: {task_list_help()}")
    mc_mode: str = option(
        "generate",
        "multiple choice: extract the letter of a generated reply, or rank choices by log-likelihood",
        choices=("generate", "loglik"),
    )
    context_effect: bool = option(
        True,
        "tasks whose items carry a user context (prefs, file: items with 'context'): each model also "
        "answers every item without it, to tell personalization from a generic change of style (doubles "
        "generation)",
    )
    wrong_context: bool = option(
        True,
        "tasks whose items carry a user context: each model also answers every item with another user's context (a profile of the "
        "same set whose preference differs, drawn with the first seed), scored against the item's own "
        "preference: the content effect tells reading the context from reacting to any context (one more "
        "answer per item)",
    )
    distillation_gap: bool | None = option(
        None,
        "tasks whose items carry a user context, with --baseline: how far the model's next-token distributions are from CAD of the "
        "baseline (A from --gap-alpha, else --cad-alpha, else 1), along the baseline's replies with the context; three "
        "forward passes per item, no generation (mipo.evaluation.distillation_gap)",
        default_text="on where items have a user context and --baseline is given",
    )
    cad_alpha: float | None = option(
        None,
        "context-aware decoding for --model (the baseline decodes plainly): (1+A) log p(.|x,c) - A log p(.|x), "
        "A >= 0; every item needs a context (mipo.engine.cad); also the teacher's A of the distillation gap",
    )
    cad_plausibility: float | None = option(None, PLAUSIBILITY_HELP)
    cad_lift_once: bool = option(False, LIFT_ONCE_HELP)
    gap_alpha: float | None = option(
        None,
        "the teacher's A of the distillation gap alone (the model still decodes as --cad-alpha says): e.g. a "
        "model distilled from CAD A = 3 measured against A = 3 as well as against the default A = 1",
        default_text="--cad-alpha, else 1",
    )

    def problems(self) -> list[str]:
        from mipo.engine.cad import cad_problems

        problems = super().problems()
        if self.cad_alpha is not None and not _is_number(self.cad_alpha):
            problems.append(f"--cad-alpha must be a number >= 0, got {self.cad_alpha!r}")
        else:
            problems += cad_problems(
                self.cad_alpha, self.backend, plausibility=self.cad_plausibility, lift_once=self.cad_lift_once
            )
        if self.gap_alpha is not None and not (_is_number(self.gap_alpha) and self.gap_alpha >= 0):
            problems.append(f"--gap-alpha must be a number >= 0, got {self.gap_alpha!r}")
        if self.mc_mode == "loglik" and self.backend != "hf":
            problems.append(
                f"--mc-mode loglik ranks choices by the model's log-probabilities, which backend {self.backend!r} "
                "cannot score: use --backend hf, or --mc-mode generate"
            )
        if self.distillation_gap and not self.baseline:
            problems.append(
                "--distillation-gap needs --baseline: the teacher is context-aware decoding of the baseline"
            )
        if self.distillation_gap and self.backend != "hf":
            problems.append(
                f"--distillation-gap scores log-probabilities with the model itself: use --backend hf, "
                f"not {self.backend!r}"
            )
        if not self.task_names:
            problems.append("task: name at least one task")
        from mipo.evaluation.judge_task import judge_task_problems

        return problems + self.judge_problems() + judge_task_problems(self)

    @property
    def task_names(self) -> list[str]:
        return split_task_list(self.task)


@dataclass
class Job:
    """What one evaluation runs: its tasks, the model in each role, and where its files go."""

    tasks: list[Task]
    roles: dict[str, str]  # "model" (and "baseline") -> model name
    reference: str | None  # pmi's reference model (None without a pmi task)
    compared: dict[str, str | None]  # task -> the model in the "baseline" role, if any
    partial: Path  # OUT/partial: generated batches, kept until results.json exists
    cache_paths: dict[str, Path] = field(default_factory=dict)  # task -> cached baseline rows


NO_CONTEXT = "no-context"
WRONG_CONTEXT = "wrong-context"


def no_context_role(role: str) -> str:
    """``model`` -> ``model.no-context``: the name of that role's no-context partial and examples files."""
    return f"{role}.{NO_CONTEXT}"


def wrong_context_role(role: str) -> str:
    """``model`` -> ``model.wrong-context``: that role's answers with another user's context."""
    return f"{role}.{WRONG_CONTEXT}"


def scored_with_contexts(task: Task) -> bool:
    """Tasks scored on free replies to items with a user context (pmi measures the context its own way)."""
    from mipo.evaluation.judge_task import JUDGE_KINDS

    scored = task.score is not None and task.kind not in ("pmi", *JUDGE_KINDS)  # pmi: its own way; judges
    return scored and any(item.context for item in task.items)


def measures_context_effect(config: EvalConfig, task: Task) -> bool:
    return config.context_effect and scored_with_contexts(task)


def measures_content_effect(config: EvalConfig, task: Task) -> bool:
    return config.wrong_context and scored_with_contexts(task)


def _is_number(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
