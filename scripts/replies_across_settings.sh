#!/usr/bin/env bash
# How many of the demo's greedy replies change with the decode workers, the batch size or the threads
# (docs/reliability.md, "What is reproduced where"). The demo's eval of prefs (74 items, greedy, 64 new
# tokens, its 8 preference types), base model only, answered under each setting; then a count of the items
# whose reply differs from the first setting's. About 1-2 minutes a setting on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/mipo-replies-across-settings}
types=start_word,keyword,name,max_words,lowercase,bullet_list,single_paragraph,no_commas
settings=("2 64 2" "1 64 2" "1 64 1" "2 8 2" "1 8 1")  # workers batch threads
for s in "${settings[@]}"; do
  read -r workers batch threads <<<"$s"
  dir="$out/w$workers-b$batch-t$threads"
  [ -f "$dir/results.json" ] || OMP_NUM_THREADS=$threads HF_HUB_OFFLINE=1 .venv/bin/mipo eval --task prefs \
    --model smollm2-135m --limit 80 --greedy --max-new-tokens 64 --preference-types "$types" \
    --no-context-effect --workers "$workers" --batch-size "$batch" --no-progress --out "$dir" >/dev/null
done
.venv/bin/python - "$out" "${settings[@]}" <<'PY'
import json, sys
from pathlib import Path
out, settings = Path(sys.argv[1]), sys.argv[2:]
def replies(s):
    w, b, t = s.split()
    rows = [json.loads(l) for l in (out / f"w{w}-b{b}-t{t}" / "examples" / "prefs.model.jsonl").open()]
    return {r["id"]: r["response"] for r in rows}
first = replies(settings[0])
for s in settings:
    other = replies(s)
    changed = sum(first[k] != other[k] for k in first)
    w, b, t = s.split()
    print(f"workers {w}, batch {b}, threads {t}: {changed} of {len(first)} replies differ from workers 2, batch 64, threads 2")
PY
