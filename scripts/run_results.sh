#!/usr/bin/env bash
# Every run behind docs/results.md: `scripts/run_results.sh [prefs|math|sweep|screen|alltypes|all|RUN ...]`.
# Each run is one `mipo run` of a config in configs/results/; rerunning skips finished stages, so the
# script can be stopped and started again. Two groups can run side by side on 2 cores with MIPO_THREADS=1.
# Afterwards `python scripts/results_table.py` rebuilds the tables from runs/results/*/.
set -euo pipefail
cd "$(dirname "$0")/.."
MIPO="${MIPO:-.venv/bin/mipo}"
export OMP_NUM_THREADS="${MIPO_THREADS:-${OMP_NUM_THREADS:-2}}"
mkdir -p runs/results

declare -A CONFIG OVERRIDES
for seed in 0 1 2; do
    for method in incomplete random other-context sft; do
        CONFIG[prefs-$method-s$seed]=prefs-$method
        OVERRIDES[prefs-$method-s$seed]="seed=$seed"
    done
done
for seed in 0 1 2; do
    for method in drop-sentence random; do
        CONFIG[gsm8k-$method-s$seed]=gsm8k-$method
        OVERRIDES[gsm8k-$method-s$seed]="seed=$seed"
    done
done
# the sweep: one setting changed at a time around the defaults (lr 2e-4, beta 0.1, 2 epochs)
for seed in 0 1 2; do
    for change in lr5e-5:train.learning_rate=5e-5 lr5e-4:train.learning_rate=5e-4 beta0.5:train.beta=0.5 \
        epochs4:train.epochs=4; do
        CONFIG[sweep-${change%%:*}-s$seed]=prefs-incomplete
        OVERRIDES[sweep-${change%%:*}-s$seed]="seed=$seed ${change#*:}"
    done
done

# issue 16's screen (seed 0) and its confirmation (seeds 1, 2): one config each in configs/results/screen-*.yaml,
# and its last comparison, the default and the confirmation's best on every preference type (alltypes-*.yaml);
# the context-aware decoding rows are evaluations of the base model alone (`cad<A>`)
for config in configs/results/screen-*.yaml configs/results/alltypes-*.yaml; do
    variant=$(basename "$config" .yaml)
    for seed in 0 1 2; do
        CONFIG[$variant-s$seed]=$variant
        OVERRIDES[$variant-s$seed]="seed=$seed"
    done
done
for alpha in 0.5 1; do CONFIG[screen-cad$alpha-s0]=cad; done

# in order of what the comparison needs first: every method at seed 0 and 1 before seed 2
PREFS="prefs-incomplete-s0 prefs-sft-s0 prefs-incomplete-s1 prefs-random-s0 prefs-random-s1 prefs-incomplete-s2
       prefs-random-s2 prefs-other-context-s0 prefs-sft-s1 prefs-other-context-s1 prefs-sft-s2
       prefs-other-context-s2"
MATH="gsm8k-drop-sentence-s0 gsm8k-random-s0 gsm8k-drop-sentence-s1 gsm8k-random-s1"
SCREEN="screen-cad0.5-s0 screen-cad1-s0 screen-mi4-s0 screen-mi8-s0 screen-marginal-s0
        screen-other-context-infonce-s0 screen-other-context-sami-s0 screen-incomplete-infonce-s0
        screen-dpo-nll-s0 screen-rounds2-s0 screen-mi8-t1-s0 screen-mi4-negative-s0"
ALLTYPES="alltypes-incomplete-s0 alltypes-rounds2-s0"
SWEEP="sweep-lr5e-5-s0 sweep-lr5e-4-s0 sweep-beta0.5-s0 sweep-epochs4-s0 sweep-lr5e-4-s1 sweep-lr5e-4-s2
       sweep-epochs4-s1 sweep-epochs4-s2 sweep-beta0.5-s1 sweep-beta0.5-s2 sweep-lr5e-5-s1 sweep-lr5e-5-s2"

run() {  # run NAME
    local name=$1
    [[ -n "${CONFIG[$name]:-}" ]] || { echo "unknown run '$name'" >&2; exit 2; }
    echo "$(date +%T) $name"
    if [[ ${CONFIG[$name]} == cad ]]; then  # context-aware decoding: the base model decoding with CAD
        local alpha=${name#screen-cad} out=runs/results/$name/eval/prefs
        alpha=${alpha%-s0}
        [[ -f $out/results.json ]] && return 0
        "$MIPO" eval $([[ -d $out/partial ]] && echo --resume) --task prefs --model smollm2-135m \
            --baseline smollm2-135m --cad-alpha "$alpha" --limit 80 --greedy --max-new-tokens 64 \
            --preference-types start_word,keyword,name,max_words,lowercase,bullet_list,single_paragraph,no_commas \
            --out "$out" --no-progress >"runs/results/$name.log" 2>&1 || { echo "$name failed"; return 1; }
        return 0
    fi
    # shellcheck disable=SC2086  # the overrides are words
    "$MIPO" run "configs/results/${CONFIG[$name]}.yaml" "run_dir=runs/results/$name" ${OVERRIDES[$name]:-} \
        >"runs/results/$name.log" 2>&1 || { echo "$name failed: see runs/results/$name.log"; return 1; }
}

names=()
for arg in "${@:-all}"; do
    case "$arg" in
        prefs) names+=($PREFS) ;;
        math) names+=($MATH) ;;
        sweep) names+=($SWEEP) ;;
        screen) names+=($SCREEN) ;;
        alltypes) names+=($ALLTYPES) ;;
        all) names+=($PREFS $MATH $SWEEP $SCREEN $ALLTYPES) ;;
        *) names+=("$arg") ;;
    esac
done
for name in "${names[@]}"; do
    run "$name"
done
