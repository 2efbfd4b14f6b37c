#!/usr/bin/env bash
# Measure the context effect of a recorded prefs run (docs/results/RUN) whose model was not kept: retrain it
# from its saved pairs file with the run's own settings (seed from the folder name), then evaluate base vs
# model with and without the users' context (mipo eval's default). Resumable: a finished step is skipped.
#   MIPO_THREADS=1 scripts/context_effect_rerun.sh prefs-incomplete-s0
set -euo pipefail
run="$1"
seed="${run##*-s}"
src="docs/results/$run"
out="runs/context-effect/$run"
export OMP_NUM_THREADS="${MIPO_THREADS:-${OMP_NUM_THREADS:-2}}" HF_HUB_OFFLINE=1
mipo="${MIPO:-.venv/bin/mipo}"
settings=$(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["train"]; print(" ".join("--%s %s" % (k.replace("_", "-"), v) for k, v in c.items()))' "$src/run_config.json")
types=start_word,keyword,name,max_words,lowercase,bullet_list,single_paragraph,no_commas
[ -f "$out/train/model/mipo_run.json" ] || $mipo train --model smollm2-135m --pairs "$src/pairs/pairs.jsonl" \
  --out "$out/train/model" --seed "$seed" $settings --disable_tqdm true
resume=$([ -d "$out/eval/prefs/partial" ] && echo --resume || true)
[ -f "$out/eval/prefs/results.json" ] || $mipo eval $resume --task prefs --model "$out/train/model" --baseline smollm2-135m \
  --limit 80 --greedy --max-new-tokens 64 --preference-types "$types" --out "$out/eval/prefs" --no-progress
