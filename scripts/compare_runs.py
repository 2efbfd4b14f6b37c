"""Two `mipo run` folders of one config under another setting (``--dtype float32`` and ``bfloat16``): how
many replies changed, and each run's context effect and PMI with its confidence interval.

    python scripts/compare_runs.py runs/demo-float32 runs/demo-bfloat16

Replies are compared item by item, in every ``eval/*/examples/*.jsonl`` file the two runs share (the
base model's and the trained model's, with and without the user's context); the numbers come from each
evaluation's ``results.json``. docs/benchmarks.md ("bf16 on a CPU: quality") records its output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def replies(path: Path) -> dict[tuple[str, int], str]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {(str(r["id"]), int(r.get("seed", 0))): str(r.get("response", r.get("responses"))) for r in rows}


def interval(entry: dict) -> str:
    low, high = entry["ci"]
    return f"{entry['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()

    print(f"replies that differ ({args.first.name} vs {args.second.name}):")
    for path in sorted(args.first.glob("eval/*/examples/*.jsonl")):
        other = args.second / path.relative_to(args.first)
        if not other.is_file():
            continue
        a, b = replies(path), replies(other)
        shared = sorted(set(a) & set(b))
        changed = sum(a[k] != b[k] for k in shared)
        print(f"  {path.relative_to(args.first)}: {changed} of {len(shared)}")
    for run in (args.first, args.second):
        print(f"{run.name}:")
        for results in sorted(run.glob("eval/*/results.json")):
            for name, task in json.loads(results.read_text())["tasks"].items():
                effect = task.get("context_effect", {})
                if "context_effect" in effect:
                    print(
                        f"  {name}: model {task['model']['mean']:.3f}, baseline {task['baseline']['mean']:.3f}; "
                        f"context effect {interval(effect['context_effect'])}, generic shift "
                        f"{interval(effect['generic_shift'])}"
                    )
                elif task.get("kind") == "pmi":
                    label = f"{results.parent.name} ({task.get('against', 'prompts')})"
                    print(
                        f"  {label}: PMI model {interval(task['model'])}, difference {interval(task['difference'])}"
                    )


if __name__ == "__main__":
    main()
