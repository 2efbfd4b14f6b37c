"""``judge:SOURCE`` and ``judge-check``: the model's replies against the baseline's, judged by an LLM.

- ``judge:SOURCE``: the model and the baseline each answer every item of SOURCE (``mipo eval``'s usual
  generation, resumable and cached like any task); then the judge (``--judge``, ``--judge-url``...)
  compares the two replies to each item in both orders (``mipo.evaluation.judges.judge_pairwise``). SOURCE is
  ``prefs``, another registered task (``gsm8k``, ``file:PATH``...) or a prompt file
  (``judge:path/prompts.jsonl``: records with ``prompt`` and an optional ``context``).
- ``judge-check``: how far to trust the judge: on ``prefs`` items, the pairs of replies the code
  checkers tell apart, and how often the judge picks the one they prefer (``mipo.evaluation.judges.judge_check``).

A judge task's table row is the source's own score (``prefs``: preferences followed) or, for a prompt file
with no scorer, the replies' length in words. Where the items state preferences (``judge:prefs``) the
check runs on the same replies (its verdicts come from the cache the win rate filled), so a win rate on
``prefs`` items is never reported without it. ``add_judgments`` is the step ``mipo eval`` runs once both
models have answered; it writes ``results.json``'s ``judge`` and ``judge_check`` entries and the rows
under ``OUT/examples/``. See docs/judges.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mipo.core.errors import ConfigError
from mipo.evaluation.judges.pairwise import checker_pairs, judge_check, judge_pairwise
from mipo.tasks.base import TASKS, Item, Task, TaskOptions, load_task, register_task

log = logging.getLogger(__name__)

JUDGE_KINDS = ("judge", "judge-check")  # task kinds whose replies are judged after generation
WORDS_METRIC = "reply length in words (no scorer: the judge compares the replies)"


def reply_words(item: Item, response: str) -> dict[str, Any]:
    """The score of a prompt-file item: the reply's length, which judges are known to reward."""
    return {"score": float(len(response.split())), "extracted": None, "verdict": None}


def source_task(source: str, options: TaskOptions) -> Task:
    """The task named ``source`` (``prefs``, ``gsm8k``, ``file:PATH``...) or a prompt file's items."""
    head = source.partition(":")[0]
    if head in TASKS:
        if head in ("judge", "judge-check", "pmi"):
            raise ConfigError(
                f"task judge:{source}: the judge compares the replies to a task's prompts; choose another source"
            )
        return load_task(
            source,
            train_split=options.train_split,
            prompts=options.prompts,
            preference_types=options.preference_types,
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"task judge:{source}: not a task name ({', '.join(TASKS.names())}) nor an existing prompt file"
        )
    from mipo.prompts.records import load_prompts

    items = [Item.from_record(record) for record in load_prompts(path)]
    return Task(str(path), "generate", items, reply_words, WORDS_METRIC, str(path))


@register_task(
    "judge",
    "the model's replies against the baseline's, judged pairwise by an LLM (--judge; needs --baseline)",
    argument="SOURCE",
)
def _build_judge(options: TaskOptions) -> Task:
    source = source_task(str(options.argument), options)
    return Task(
        f"judge:{options.argument}",
        "judge",
        source.items,
        source.score or reply_words,
        source.metric if source.score else WORDS_METRIC,
        source.source,
    )


@register_task("judge-check", "how far to trust the judge: its agreement with the prefs checkers (--judge)")
def _build_judge_check(options: TaskOptions) -> Task:
    prefs = load_task("prefs", train_split=options.train_split, preference_types=options.preference_types)
    return Task("judge-check", "judge-check", prefs.items, prefs.score, prefs.metric, prefs.source)


def is_judge_task(name: str) -> bool:
    return name.partition(":")[0] in ("judge", "judge-check")


def judge_task_problems(config: Any) -> list[str]:
    """What would stop the judge, found before any model answers: a judge task needs ``--baseline`` (a
    pairwise judge compares two models), a template that loads, and a judge that can be built (an endpoint
    judge's client and API key). ``config`` is an ``EvalConfig``."""
    from mipo.core.errors import MipoError
    from mipo.evaluation.judges.template import load_template

    judged = [name for name in config.task_names if is_judge_task(name)]
    if not judged:
        return []
    problems = []
    if not config.baseline:
        problems.append(
            f"task {judged[0]}: a pairwise judge needs two models; pass --baseline (the replies to compare with)"
        )
    if config.judge_problems():
        return problems  # the settings' own problems are reported by JudgeSettings.judge_problems
    for check in (lambda: load_template(config.judge_template), config.make):
        try:
            check()
        except MipoError as e:
            problems.append(str(e))
    return problems


# --- the step mipo eval runs once both models have answered -----------------------------------------


def add_judgments(
    config: Any, tasks: list[Task], runs: dict[str, Any], results: dict[str, Any], slot=None
) -> None:
    """Judge the replies of every judge task and store the outcome in ``results["tasks"][name]``:
    ``judge`` (``judge_pairwise``'s summary) and ``judge_check`` (the check on the same replies where the
    items state preferences, else the ``judge-check`` task's, else None). ``config`` is an ``EvalConfig``
    (its ``JudgeSettings``); ``slot`` the generation engine's holder, emptied before the judge loads."""
    judged = [task for task in tasks if task.kind in JUDGE_KINDS]
    if not judged:
        return
    if slot is not None:
        slot.release()  # a local judge and the last model compared never share memory
    judge = config.make(device=config.device)
    try:
        for task in judged:
            entry = results["tasks"][task.name]
            judge_one_task(config, task, runs[task.name], judge, entry, Path(config.out))
    finally:
        judge.close()
    checked = [results["tasks"][t.name]["judge_check"] for t in judged if t.kind == "judge-check"]
    for task in judged:
        entry = results["tasks"][task.name]
        if task.kind == "judge" and entry.get("judge_check") is None:
            entry["judge_check"] = {**checked[0], "from": "judge-check"} if checked else None


def judge_one_task(
    config: Any, task: Task, by_seed: dict[int, list[dict]], judge, entry: dict, out: Path
) -> None:
    """The first seed's replies of the model and the baseline, judged (and checked where they can be)."""
    seed = next(iter(by_seed["model"]))
    model_replies = [row["response"] for row in by_seed["model"][seed]]
    baseline_replies = [row["response"] for row in by_seed["baseline"][seed]]
    settings = {"template": config.judge_template, "cache": config.judge_cache, "seed": config.seeds[0]}
    examples = Path(entry["examples"]["model"]).name.removesuffix(".model.jsonl")
    if task.kind == "judge":
        log.info("%s: judging %d pairs of replies in both orders", task.name, len(task.items))
        summary, rows = judge_pairwise(task.items, model_replies, baseline_replies, judge, **settings)
        rows = [
            {**row, "prompt": item.prompt, "context": item.context, "model": reply, "baseline": other}
            for row, item, reply, other in zip(rows, task.items, model_replies, baseline_replies)
        ]
        summary["replies_seed"] = seed
        summary["examples"] = write_rows(out, f"examples/{examples}.judge.jsonl", rows)
        entry["judge"] = summary
    if all((item.meta or {}).get("preferences") for item in task.items):
        log.info("%s: judge-check on the pairs the prefs checkers tell apart", task.name)
        pairs = checker_pairs(task.items, model_replies, baseline_replies)
        check, rows = judge_check(pairs, judge, **settings)
        check["examples"] = write_rows(out, f"examples/{examples}.judge-check.jsonl", rows)
        entry["judge_check"] = check


def write_rows(out: Path, relative: str, rows: list[dict[str, Any]]) -> str:
    from mipo.core.files import RowWriter

    with RowWriter(out / relative, overwrite=True) as writer:
        for row in rows:
            writer.write(row)
    return relative
