"""Rebuild the tables of docs/results.md from the run folders that scripts/run_results.sh writes.

    python scripts/results_table.py                  # reads runs/results/, prints markdown
    python scripts/results_table.py --runs DIR --out docs/results-tables.md

A run folder is named ``<group>-s<seed>`` (e.g. ``prefs-incomplete-s1``); each of its evaluations is
``eval/<task>/results.json`` with per-item rows in ``eval/<task>/examples/*.jsonl``. Seeds of one group
are pooled item by item: each test item's difference to the base model is averaged over the seeds, and
the interval is a bootstrap over items (it holds the items' noise, not the seeds'; the per-seed
differences are listed beside it so the seeds' spread shows).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from mipo.core.stats import mean_ci, paired_difference
from mipo.formats.results import format_ci, format_p

RUN_NAME = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")
PREFS_METHODS = [
    ("prefs-incomplete", "MIPO, incomplete negatives"),
    ("prefs-other-context", "MIPO, other-context negatives"),
    ("prefs-random", "MIPO, random negatives"),
    ("prefs-sft", "SFT on the same chosen responses"),
    ("sweep-lr5e-5", "MIPO, incomplete negatives, learning rate 5e-5"),
    ("sweep-lr5e-4", "MIPO, incomplete negatives, learning rate 5e-4"),
    ("sweep-epochs4", "MIPO, incomplete negatives, 4 epochs"),
    ("sweep-beta0.5", "MIPO, incomplete negatives, beta 0.5"),
]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def item_scores(eval_dir: Path, task: str, role: str) -> dict[str, float]:
    """Each item's score (averaged over sampling seeds) for ``role`` (model or baseline)."""
    results = json.loads((eval_dir / "results.json").read_text())
    path = eval_dir / results["tasks"][task]["examples"][role]
    by_id: dict[str, list[float]] = defaultdict(list)
    for row in _rows(path):
        by_id[str(row["id"])].append(float(row["score"]))
    return {k: sum(v) / len(v) for k, v in by_id.items()}


def reply_words(eval_dir: Path, task: str, role: str) -> float:
    """Mean length of the replies in words: a drop flags short or cut replies gaming length checkers."""
    results = json.loads((eval_dir / "results.json").read_text())
    rows = _rows(eval_dir / results["tasks"][task]["examples"][role])
    return float(np.mean([len((row.get("response") or "").split()) for row in rows]))


def degenerate_replies(eval_dir: Path, task: str, role: str) -> tuple[int, int]:
    """Replies under 10 words, and replies that repeat themselves (under 70% of their 3-word sequences
    distinct): what a learning rate or epoch count that over-trains produces first."""
    results = json.loads((eval_dir / "results.json").read_text())
    short = repeating = 0
    for row in _rows(eval_dir / results["tasks"][task]["examples"][role]):
        text = row.get("response") or ""
        short += len(text.split()) < 10
        repeating += repeats_itself(text)
    return short, repeating


def repeats_itself(text: str) -> bool:
    """Under 70% of the reply's 3-word sequences distinct: the results' "repeating" reply."""
    words = text.split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return bool(trigrams) and len(set(trigrams)) < 0.7 * len(trigrams)


def _prompt_text(row: dict, role: str | None = None) -> str:
    """The text of a reply row's prompt messages (only those of ``role``, where given)."""
    messages = [m for m in row.get("prompt") or [] if isinstance(m, dict)]
    return " ".join(m.get("content", "") for m in messages if role is None or m.get("role") == role)


def restating_replies(eval_dir: Path, task: str, role: str, chars: int = 40) -> int:
    """Replies whose first ``chars`` characters are copied from their prompt (the question, or the user's
    context): a reply that restates the question instead of answering it."""
    results = json.loads((eval_dir / "results.json").read_text())
    rows = _rows(eval_dir / results["tasks"][task]["examples"][role])
    return sum(
        1
        for row in rows
        if (row.get("response") or "")[:chars].strip()
        and (row.get("response") or "")[:chars] in _prompt_text(row)
    )


def echoing_replies(eval_dir: Path, task: str, role: str, n: int = 4) -> int:
    """Replies that copy ``n`` consecutive words of the user's context (the system message, where these
    evaluations put it; words lowercased, punctuation and quote marks dropped): a reply that spells out the instruction ("Start your answer with the word") rather
    than following it, which a checker of the stated word can still count as followed."""
    results = json.loads((eval_dir / "results.json").read_text())

    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def echoes(row: dict) -> bool:
        context = words(_prompt_text(row, "system"))
        grams = {tuple(context[i : i + n]) for i in range(len(context) - n + 1)}
        reply = words(row.get("response") or "")
        return any(tuple(reply[i : i + n]) in grams for i in range(len(reply) - n + 1))

    return sum(echoes(row) for row in _rows(eval_dir / results["tasks"][task]["examples"][role]))


def load_runs(runs_dir: Path) -> dict[str, dict[int, Path]]:
    """``{group: {seed: run folder}}`` for every run folder with at least one finished evaluation."""
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        match = RUN_NAME.match(folder.name)
        if match and list(folder.glob("eval/*/results.json")):
            groups[match["group"]][int(match["seed"])] = folder
    return groups


def fmt(summary: dict | None, digits: int = 3) -> str:
    """A difference: signed, ``-`` when there is none."""
    return format_ci(summary, digits, signed=True, missing="-")


def fmt_plain(summary: dict | None, digits: int = 3) -> str:
    return format_ci(summary, digits, missing="-")


def fmt_p(p: float) -> str:
    # docs/results.md prints p to 3 decimals (0.000 where the resampled p is below 0.0005)
    return format_p(p, floor=None)


def pooled(runs: dict[int, Path], task: str, eval_name: str | None = None) -> dict | None:
    """Model and baseline item scores averaged over seeds; the paired difference with its interval."""
    eval_name = eval_name or task
    per_seed, words = [], []
    for seed, folder in sorted(runs.items()):
        eval_dir = folder / "eval" / eval_name
        if not (eval_dir / "results.json").is_file():
            continue
        words.append((reply_words(eval_dir, task, "model"), reply_words(eval_dir, task, "baseline")))
        per_seed.append((seed, item_scores(eval_dir, task, "model"), item_scores(eval_dir, task, "baseline")))
    if not per_seed:
        return None
    ids = sorted(per_seed[0][1])
    if any(sorted(m) != ids or sorted(b) != ids for _, m, b in per_seed):
        raise SystemExit(f"{eval_name}: the seeds' runs scored different items; cannot pool them")
    model = [np.mean([m[i] for _, m, _ in per_seed]) for i in ids]
    base = [np.mean([b[i] for _, _, b in per_seed]) for i in ids]
    return {
        "seeds": [s for s, _, _ in per_seed],
        "n": len(ids),
        "model": mean_ci(model),
        "baseline": mean_ci(base),
        "difference": paired_difference(model, base),
        "words": float(np.mean([w for w, _ in words])),
        "baseline_words": float(np.mean([b for _, b in words])),
        "per_seed_model": [float(np.mean(list(m.values()))) for _, m, _ in per_seed],
        "per_seed_difference": [float(np.mean([m[i] - b[i] for i in ids])) for _, m, b in per_seed],
    }


def _results(folder: Path, eval_name: str) -> dict | None:
    path = folder / "eval" / eval_name / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _train_summary(folder: Path) -> dict:
    path = folder / "train" / "model" / "train_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _loss(folder: Path) -> str:
    loss = _train_summary(folder).get("final_loss")
    return f"{loss:.3f}" if loss is not None else "-"


def _pairs_count(folder: Path) -> int | None:
    path = folder / "pairs" / "pairs.jsonl"
    return sum(1 for line in path.open() if line.strip()) if path.is_file() else None


def _train_seconds(folder: Path) -> float:
    state = folder / "train" / "stage.json"
    return json.loads(state.read_text()).get("seconds") or 0.0 if state.is_file() else 0.0


def prefs_table(groups: dict[str, dict[int, Path]]) -> list[str]:
    lines = [
        "| model | seeds | preferences followed (mean over seeds) | per seed | difference to the prompting"
        " baseline [95% CI] | p | per-seed differences | reply words | context effect [95% CI]: what moved |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    baseline_done = False
    for group, label in PREFS_METHODS:
        if group not in groups:
            continue
        entry = pooled(groups[group], "prefs")
        if entry is None:
            continue
        if not baseline_done:
            lines.append(
                f"| base model, preferences in the prompt (prompting baseline) | - | "
                f"{fmt_plain(entry['baseline'])} | - | - | - | - | {entry['baseline_words']:.1f} | - |"
            )
            baseline_done = True
        lines.append(
            f"| {label} | {','.join(map(str, entry['seeds']))} | {fmt_plain(entry['model'])} | "
            f"{' / '.join(f'{v:.3f}' for v in entry['per_seed_model'])} | {fmt(entry['difference'])} | "
            f"{fmt_p(entry['difference']['p_value'])} | "
            f"{' / '.join(f'{v:+.3f}' for v in entry['per_seed_difference'])} | {entry['words']:.1f} | "
            f"{context_effect_cell(groups[group])} |"
        )
    return lines


def context_effect_cell(runs: dict[int, Path]) -> str:
    """The recipe's context effect pooled over its seeds, and which part moved (``mipo.evaluation.context_effect``);
    ``not measured`` for runs whose evaluation predates the no-context replies."""
    from mipo.evaluation.context_effect import pooled_context_effect

    summary = pooled_context_effect([folder / "eval" / "prefs" for folder in runs.values()], "prefs")
    if summary is None:
        return "not measured"
    measured = "" if summary["runs"] == len(runs) else f" ({summary['runs']} of {len(runs)} seeds)"
    moved = summary["verdict"].split(":")[0]
    if "with a generic shift" in summary["verdict"]:  # both moved: say so, not only the first
        moved += f", with a generic shift of {fmt(summary['generic_shift'])}"
    return f"{fmt(summary['context_effect'])}{measured}: {moved}"


def per_preference_table(groups: dict[str, dict[int, Path]]) -> list[str]:
    """Per preference type: the base model's rate and each method's, pooled over seeds."""
    rates: dict[str, dict[str, float]] = defaultdict(dict)
    columns = []
    for group, label in [("base", "base")] + PREFS_METHODS:
        source = group if group != "base" else next((g for g, _ in PREFS_METHODS if g in groups), None)
        if source is None or source not in groups:
            continue
        role = "baseline" if group == "base" else "model"
        counts: dict[str, list[float]] = defaultdict(list)
        for folder in groups[source].values():
            results = _results(folder, "prefs")
            if results is None:
                continue
            for ptype, value in results["tasks"]["prefs"][role]["per_preference"].items():
                counts[ptype].append(value["mean"])
            if group == "base":
                break  # the baseline is the same model on the same items in every run
        if counts:
            columns.append(label.split(",")[-1].strip() if group != "base" else "base")
            for ptype, values in counts.items():
                rates[ptype][columns[-1]] = float(np.mean(values))
    lines = ["| preference type | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for ptype in sorted(rates):
        lines.append(
            f"| {ptype} | " + " | ".join(f"{rates[ptype].get(c, float('nan')):.2f}" for c in columns) + " |"
        )
    return lines


def run_rows(groups: dict[str, dict[int, Path]], names: list[str]) -> list[tuple[str, int, Path]]:
    return [(g, s, f) for g in names if g in groups for s, f in sorted(groups[g].items())]


def pmi_table(groups: dict[str, dict[int, Path]]) -> tuple[list[str], list[tuple[float, float]]]:
    """Per run: PMI of the base model's and the trained model's responses, and the run's task difference
    (preferences, or GSM8K for the math runs); the (PMI, preferences) differences of the prefs runs."""
    lines = [
        "| run | pairs | final train loss | PMI prompts (held out) | PMI, base (nats) | PMI, trained |"
        " PMI difference [95% CI] | reply words, base → trained | task difference [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    points = []
    for _group, _seed, folder in run_rows(groups, sorted(groups)):
        pmi = _results(folder, "pmi")
        if pmi is None:
            continue
        entry = pmi["tasks"]["pmi"]
        task = next((t for t in ("prefs", "gsm8k") if _results(folder, t)), None)
        pmi_dir = folder / "eval" / "pmi"
        words = (
            f"{reply_words(pmi_dir, 'pmi', 'baseline'):.0f} → {reply_words(pmi_dir, 'pmi', 'model'):.0f}"
            if "baseline" in entry.get("examples", {})
            else "-"
        )
        task_diff = _results(folder, task)["tasks"][task].get("difference") if task else None
        lines.append(
            f"| {folder.name} | {_pairs_count(folder)} | {_loss(folder)} | {entry['n']} {entry.get('source', '')} | "
            f"{fmt_plain(entry.get('baseline'), 1)} | {fmt_plain(entry['model'], 1)} | "
            f"{fmt(entry.get('difference'), 1)} | {words} | {task or ''} {fmt(task_diff)} |"
        )
        if task == "prefs" and task_diff and entry.get("difference"):
            points.append((entry["difference"]["mean"], task_diff["mean"]))
    return lines, points


def spearman(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    x, y = (np.argsort(np.argsort(np.array(v))) for v in zip(*points))
    return float(np.corrcoef(x, y)[0, 1])


def math_table(groups: dict[str, dict[int, Path]]) -> list[str]:
    """Per math group (``gsm8k-<negatives>``) and task: seeds pooled item by item, as for prefs."""
    lines = [
        "| MIPO prompts, negatives | task | n | seeds | base model | MIPO (mean over seeds) | per seed |"
        " difference [95% CI] | p | per-seed differences |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in sorted(g for g in groups if g.startswith("gsm8k-")):
        for task in ("gsm8k", "arc-easy", "arc-challenge", "mmlu"):
            entry = pooled(groups[group], task)
            if entry is None:
                continue
            lines.append(
                f"| GSM8K, {group.removeprefix('gsm8k-')} | {task} | {entry['n']} | "
                f"{','.join(map(str, entry['seeds']))} | {fmt_plain(entry['baseline'])} | "
                f"{fmt_plain(entry['model'])} | {' / '.join(f'{v:.3f}' for v in entry['per_seed_model'])} | "
                f"{fmt(entry['difference'])} | {fmt_p(entry['difference']['p_value'])} | "
                f"{' / '.join(f'{v:+.3f}' for v in entry['per_seed_difference'])} |"
            )
    return lines


def sweep_table(groups: dict[str, dict[int, Path]]) -> list[str]:
    lines = [
        "| run | learning rate | beta | epochs | final loss | preferences difference [95% CI] | p |"
        " PMI difference | reply words | replies < 10 words / repeating | training minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = ["prefs-incomplete"] + sorted(g for g in groups if g.startswith("sweep-"))
    base_shown = False
    for _group, _seed, folder in run_rows(groups, names):
        train = json.loads((folder / "run_config.json").read_text()).get("train", {})
        prefs, pmi = _results(folder, "prefs"), _results(folder, "pmi")
        if prefs is None:
            continue
        eval_dir = folder / "eval" / "prefs"
        if not base_shown:
            short, repeating = degenerate_replies(eval_dir, "prefs", "baseline")
            words = reply_words(eval_dir, "prefs", "baseline")
            lines.append(
                f"| base model | - | - | - | - | - | - | - | {words:.1f} | {short} / {repeating} | - |"
            )
            base_shown = True
        diff = prefs["tasks"]["prefs"]["difference"]
        pmi_diff = pmi["tasks"]["pmi"].get("difference") if pmi else None
        short, repeating = degenerate_replies(eval_dir, "prefs", "model")
        lines.append(
            f"| {folder.name} | {train.get('learning_rate')} | {train.get('beta') or 0.1} | "
            f"{train.get('epochs')} | {_loss(folder)} | {fmt(diff)} | {fmt_p(diff['p_value'])} | "
            f"{fmt(pmi_diff, 1)} | {reply_words(eval_dir, 'prefs', 'model'):.1f} | {short} / {repeating} | "
            f"{_train_seconds(folder) / 60:.1f} |"
        )
    return lines


SCREEN = [
    ("screen-cad0.5", "context-aware decoding, A = 0.5 (no training)"),
    ("screen-cad1", "context-aware decoding, A = 1 (no training)"),
    ("prefs-incomplete", "incomplete, DPO (the default)"),
    ("screen-mi4", "incomplete, MI-ranked N = 4, T = 0.7, rejected = the lowest-PMI candidate"),
    ("screen-mi8", "incomplete, MI-ranked N = 8, T = 0.7, rejected = the lowest-PMI candidate"),
    ("screen-mi4-t1", "incomplete, MI-ranked N = 4, T = 1.0, rejected = the lowest-PMI candidate"),
    ("screen-mi8-t1", "incomplete, MI-ranked N = 8, T = 1.0, rejected = the lowest-PMI candidate"),
    ("screen-mi4-negative", "incomplete, MI-ranked N = 4, T = 0.7, rejected = the no-context reply"),
    ("screen-marginal", "marginal (empty user turn), DPO"),
    ("screen-other-context-infonce", "other-context, InfoNCE"),
    ("screen-other-context-sami", "other-context, SAMI"),
    ("screen-incomplete-infonce", "incomplete, InfoNCE"),
    ("screen-dpo-nll", "incomplete, DPO + NLL on the chosen replies"),
    ("screen-rounds2", "incomplete, DPO, 2 iterative rounds"),
]
# the default and the confirmation's best on every preference type (the screen used the demo's 8)
ALLTYPES = [
    ("alltypes-incomplete", "incomplete, DPO (the default)"),
    ("alltypes-rounds2", "incomplete, DPO, 2 iterative rounds"),
]


def _all_train_seconds(folder: Path) -> float:
    """Training time of every round (``train/``, ``train-r2/``, ...)."""
    return sum(json.loads(p.read_text()).get("seconds") or 0.0 for p in folder.glob("train*/stage.json"))


def screen_table(
    groups: dict[str, dict[int, Path]], seeds: set[int] | None = None, recipes: list[tuple[str, str]] = SCREEN
) -> list[str]:
    """Issue 16's screen (``seeds={0}``) or its confirmation (every seed): each recipe by its context effect
    first, then adherence, reply length, repetition and training time. Seeds are pooled item by item."""
    from mipo.evaluation.context_effect import pooled_context_effect

    lines = [
        "| recipe | seeds | followed, with context | difference to the prompting baseline [95% CI] |"
        " followed, without context | generic shift [95% CI] | context effect [95% CI] | p |"
        " reply words | repeating replies | replies restating the prompt | training minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_shown = False
    for group, label in recipes:
        runs = {s: f for s, f in groups.get(group, {}).items() if seeds is None or s in seeds}
        dirs = [
            f / "eval" / "prefs" for f in runs.values() if (f / "eval" / "prefs" / "results.json").is_file()
        ]
        summary = pooled_context_effect(dirs, "prefs") if dirs else None
        if summary is None or summary["runs"] != len(runs) or (seeds is None and len(runs) < 2):
            continue
        repeats = [degenerate_replies(d, "prefs", "model")[1] for d in dirs]
        restating = [restating_replies(d, "prefs", "model") for d in dirs]
        words = [reply_words(d, "prefs", "model") for d in dirs]
        if not base_shown:
            scores = summary["scores"]
            lines.append(
                f"| base model, preferences in the prompt (prompting baseline) | - | "
                f"{scores['baseline_with']['mean']:.3f} | - | {scores['baseline_without']['mean']:.3f} | - | - | - | "
                f"{reply_words(dirs[0], 'prefs', 'baseline'):.1f} | "
                f"{degenerate_replies(dirs[0], 'prefs', 'baseline')[1]} | "
                f"{restating_replies(dirs[0], 'prefs', 'baseline')} | - |"
            )
            base_shown = True
        minutes = [_all_train_seconds(f) / 60 for f in runs.values()]
        lines.append(
            f"| {label} | {','.join(map(str, sorted(runs)))} | {summary['scores']['model_with']['mean']:.3f} | "
            f"{fmt(summary['gain'])} | {summary['scores']['model_without']['mean']:.3f} | "
            f"{fmt(summary['generic_shift'])} | **{fmt(summary['context_effect'])}** | "
            f"{fmt_p(summary['context_effect']['p_value'])} | {np.mean(words):.1f} | "
            f"{' / '.join(map(str, repeats))} | {' / '.join(map(str, restating))} | {np.mean(minutes):.1f} |"
        )
    return lines


def build(runs_dir: Path) -> str:
    groups = load_runs(runs_dir)
    if not groups:
        raise SystemExit(f"{runs_dir}: no run folder with a finished evaluation (run scripts/run_results.sh)")
    out = ["## Personalization (prefs, 74 held-out items, greedy)", "", *prefs_table(groups), ""]
    out += ["### Per preference type (rate followed; mean over seeds)", "", *per_preference_table(groups), ""]
    out += ["## Math and multiple choice", "", *math_table(groups), ""]
    pmi_lines, points = pmi_table(groups)
    rho = spearman(points)
    out += ["## The objective: PMI before and after", "", *pmi_lines, ""]
    out += [
        "Spearman correlation between a run's PMI difference and its preferences difference: "
        + (f"{rho:+.2f} over {len(points)} runs" if rho is not None else "too few runs"),
        "",
    ]
    out += ["## Sweep (incomplete negatives, one setting changed at a time)", "", *sweep_table(groups), ""]
    out += ["## Personalize more: the screen (seed 0)", "", *screen_table(groups, {0}), ""]
    out += ["## Personalize more: confirmed (every seed)", "", *screen_table(groups), ""]
    out += [
        "## Personalize more: every preference type (seed 0)",
        "",
        *screen_table(groups, {0}, ALLTYPES),
        "",
    ]
    return "\n".join(out)


KEPT = [
    "run_config.json",
    "train*/stage.json",
    "pairs*/pairs.jsonl",
    "train*/model/train_summary.json",
    "eval/*/results.json",
    "eval/*/stage.json",
    "eval/*/examples/*.jsonl",
]


def export(runs_dir: Path, target: Path) -> int:
    """Copy what the tables read (no weights) from every run folder to ``target``; returns files copied."""
    import shutil

    copied = 0
    for group in load_runs(runs_dir).values():
        for folder in group.values():
            for pattern in KEPT:
                for path in folder.glob(pattern):
                    destination = target / folder.name / path.relative_to(folder)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, destination)
                    copied += 1
    return copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", default="runs/results", help="folder of run folders (default: runs/results)"
    )
    parser.add_argument("--out", help="write the markdown here instead of printing it")
    parser.add_argument(
        "--export", metavar="DIR", help="also copy the files the tables read (no model weights) to DIR"
    )
    args = parser.parse_args()
    if args.export:
        print(f"copied {export(Path(args.runs), Path(args.export))} files to {args.export}", file=sys.stderr)
    text = build(Path(args.runs))
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
