"""The method screen's table (docs/results.md, "Train what decoding knows"): one row per evaluation folder,
with the columns issues 25 and 28 ask for, read from each ``results.json`` and its example files.

    python scripts/screen_table.py runs/results/screen-*-s0/eval/prefs runs/results/screen-cad-a1-s0/eval/prefs
    python scripts/screen_table.py --pool runs/results/screen-guidance-a3-preserve-p3-s*/eval/prefs \
        [--against runs/results/screen-cad-a1-s0/eval/prefs]

Columns: adherence with the context (model, base), the context effect, the content effect (own against
another user's context), the generic shift (each with its 95% CI), mean words of the model's replies with
and without a context (the base's in brackets), replies that repeat themselves (under 70% of their 3-word sequences distinct, as in
scripts/results_table.py), replies that copy 4 consecutive words of the user's context (the instruction spelled
out rather than followed), and the distillation gap to
CAD A = 1 (mean per-token KL of the model, of the base, the gap closed and CAD's decisions taken).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_table import _rows, degenerate_replies, echoing_replies  # noqa: E402  (docs/results.md's definitions)


def interval(entry: dict | None) -> str:
    if not entry:
        return "-"
    low, high = entry["ci"]
    return f"{entry['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"


def replies(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [str(r.get("response", "")) for r in _rows(path)]


def words(texts: list[str]) -> str:
    return f"{sum(len(t.split()) for t in texts) / len(texts):.0f}" if texts else "-"


def task_name(folder: Path) -> str:
    """The task an evaluation folder holds (``prefs``, ``ifeval``, ...): the first of its results.json."""
    return next(iter(json.loads((folder / "results.json").read_text())["tasks"]))


def run_name(folder: Path) -> str:
    """A row's name: the run folder (RUN/eval/TASK), with the task where it is not prefs."""
    name = folder.parents[1].name if folder.parent.name == "eval" else folder.name
    task = task_name(folder)
    return name if task == "prefs" else f"{name} ({task})"


def row(folder: Path) -> str:
    name = task_name(folder)
    task = json.loads((folder / "results.json").read_text())["tasks"][name]
    effect = task.get("context_effect", {})
    gap = task.get("distillation_gap", {})
    examples = folder / "examples"
    model_with, model_without = (
        replies(examples / f"{name}.model.jsonl"),
        replies(examples / f"{name}.model.no-context.jsonl"),
    )
    base_with = replies(examples / f"{name}.baseline.jsonl")
    base_without = replies(examples / f"{name}.baseline.no-context.jsonl")
    kl = gap.get("kl", {})
    cells = [
        run_name(folder),
        f"{task['model']['mean']:.3f} / {task['baseline']['mean']:.3f}",
        interval(effect.get("context_effect")),
        interval(effect.get("content_effect")),
        interval(effect.get("generic_shift")),
        f"{words(model_with)} ({words(base_with)})",
        f"{words(model_without)} ({words(base_without)})",
        f"{degenerate_replies(folder, name, 'model')[1]} ({degenerate_replies(folder, name, 'baseline')[1]})",
        f"{echoing_replies(folder, name, 'model')} ({echoing_replies(folder, name, 'baseline')})",
        f"{kl['model']['mean']:.4f} / {kl['baseline']['mean']:.4f}" if kl else "-",
        interval(gap.get("gap_closed")),
        f"{gap['decisions']['model']['mean']:.2f}" if "decisions" in gap else "-",
    ]
    return "| " + " | ".join(cells) + " |"


def words_by(folder: Path, groups_of) -> dict:
    """Mean-word inputs of the model's and the base's replies with the context, grouped: ``groups_of(row)``
    gives the groups an example row counts in -> {group: [model's word counts, base's word counts]}."""
    task = task_name(folder)
    totals: dict = {}
    for side, name in ((0, f"{task}.model.jsonl"), (1, f"{task}.baseline.jsonl")):
        for row in _rows(folder / "examples" / name):
            for group in groups_of(row):
                totals.setdefault(group, [[], []])[side].append(len(str(row["response"]).split()))
    return totals


def words_by_preference(folder: Path) -> str:
    """Mean words of the model's (and the base's) replies with the context, per stated preference type: is a
    shorter reply one the user asked for (max_words) or everyone's?"""
    totals = words_by(folder, lambda row: [p["type"] for p in row.get("preferences") or []])
    return ", ".join(
        f"{kind} {sum(m) / len(m):.0f} ({sum(b) / len(b):.0f})"
        for kind, (m, b) in sorted(totals.items())
        if m and b
    )


BREVITY = {"prefs": {"max_words"}}  # the preference types that ask for a shorter reply, per task


def words_by_brevity(folder: Path) -> str:
    """Mean words of the model's (and the base's) replies with the context, split by whether the item's
    profile asks for a shorter reply: the target's "shorter only where the user asked" read per item (a
    profile holds 1-3 preferences, so a per-type mean mixes in the brevity the same profile asks for)."""
    task = task_name(folder)
    if task not in BREVITY:
        return "-"
    totals = words_by(
        folder, lambda row: [any(p["type"] in BREVITY[task] for p in row.get("preferences") or [])]
    )
    return ", ".join(
        f"{'asks for brevity' if asks else 'does not'} ({len(m)} items) {sum(m) / len(m):.0f} ({sum(b) / len(b):.0f})"
        for asks, (m, b) in sorted(totals.items())
        if m and b
    )


def item_effects(folder: Path) -> tuple[dict[str, float], dict[str, float]]:
    """One evaluation's per-item context effect, (model - base) with the own context minus without it, and
    content effect, (model - base) own minus another user's context (each item's score averaged over
    sampling seeds)."""
    task = task_name(folder)
    score = {
        arm: arm_scores(folder, task, arm)
        for arm in ("model", "baseline", "model.no-context", "baseline.no-context")
        + ("model.wrong-context", "baseline.wrong-context")
    }
    gain = {i: score["model"][i] - score["baseline"][i] for i in score["model"]}
    context = {i: gain[i] - (score["model.no-context"][i] - score["baseline.no-context"][i]) for i in gain}
    content = {
        i: gain[i] - (score["model.wrong-context"][i] - score["baseline.wrong-context"][i])
        for i in score["model.wrong-context"]
    }
    return context, content


def arm_scores(folder: Path, task: str, arm: str) -> dict[str, float]:
    """Each item's score in one arm's example file (``model.no-context``, ``baseline.wrong-context``, ...),
    averaged over sampling seeds (results_table's ``item_scores`` reads only the two that results.json names)."""
    by_id: dict[str, list[float]] = {}
    for r in _rows(folder / "examples" / f"{task}.{arm}.jsonl"):
        by_id.setdefault(str(r["id"]), []).append(float(r["score"]))
    return {i: sum(v) / len(v) for i, v in by_id.items()}


def pooled(folders: list[Path], against: Path | None = None) -> str:
    """One recipe's seeds pooled item by item: its context effect (``pooled_context_effect``) and its
    content effect (each item's content effect averaged over the runs, then a bootstrap interval over
    items); with ``against`` (one evaluation, e.g. CAD's), the paired differences of both effects to its."""
    from mipo.core.stats import mean_ci
    from mipo.evaluation.context_effect import pooled_context_effect

    context = pooled_context_effect(folders)
    runs = [item_effects(folder) for folder in folders]
    ids = sorted(set.intersection(*(set(content) for _, content in runs)))
    content = mean_ci([sum(run[1][i] for run in runs) / len(runs) for i in ids])
    line = (
        f"pooled over {len(folders)} runs: context effect {interval(context['context_effect'])}, generic shift "
        f"{interval(context['generic_shift'])}, content effect {interval(content)} (n = {len(ids)})"
    )
    if against is None:
        return line
    reference = item_effects(against)
    differences = [
        mean_ci([sum(run[k][i] for run in runs) / len(runs) - reference[k][i] for i in ids]) for k in (0, 1)
    ]
    return (
        f"{line}\nminus {run_name(against)}, paired per item: context effect {interval(differences[0])}, "
        f"content effect {interval(differences[1])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluation folders (each with results.json)")
    parser.add_argument("--pool", action="store_true", help="the folders are seeds of one recipe: pool them")
    parser.add_argument(
        "--against",
        type=Path,
        help="with --pool: one evaluation folder (e.g. CAD's) to compare the effects with",
    )
    args = parser.parse_args()
    if args.pool:
        print(pooled(args.folders, args.against))
        return
    print(
        "| run | adherence model / base | context effect | content effect | generic shift | words with context "
        "(base) | words without (base) | repeating (base) | echoing the context (base) | KL to CAD model / base | gap closed "
        "| decisions |"
    )
    print("|---" * 12 + "|")
    for folder in args.folders:
        print(row(folder))
    print("\nwords with the context, per stated preference type: model (base)")
    for folder in args.folders:
        print(f"- {run_name(folder)}: {words_by_preference(folder)}")
    print("\nwords with the context, by whether the profile asks for brevity: model (base)")
    for folder in args.folders:
        print(f"- {run_name(folder)}: {words_by_brevity(folder)}")


if __name__ == "__main__":
    main()
