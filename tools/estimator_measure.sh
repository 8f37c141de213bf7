#!/usr/bin/env bash
# The degradation estimator's held-out accuracy table in docs/estimator.md, on the photo split of `make photos`:
# trained on the 12 photos of photos/train.txt (4 bundled + 8 mate-backgrounds nature photos) degraded afresh
# for every crop with the shipped omission config (`--photos`), STEPS (3000) steps of 32 LR crops of CROP (32)
# pixels; scored on shards of the 6 photos never trained on (photos/select.txt: coffee, hubble_deep_field,
# Dune; photos/report.txt: LadyBird, RainDrops, Wood), built with the omission config and build seed 1:
# HELDOUT_CROPS (100) crops of 256 HR pixels per photo (64 LR pixels, judged by the average over the
# estimator's crops). Prints `promptsr estimator eval` for select and for report, then both pooled
# (tools/estimator_seeds.py; give it several OUT folders for the mean and spread over seeds).
#   bash tools/estimator_measure.sh [OUT]        (after make setup and make photos; OUT defaults to est_out/)
#   SEED=1 bash tools/estimator_measure.sh est_out/s1       (another training seed; THREADS= another thread count)
#   CROP=48 SEED=0 bash tools/estimator_measure.sh est_out/c48_s0   (another LR crop side)
# The held-out shards are built once into HELDOUT (default est_out/heldout) and reused by later runs
# (same arguments, same bytes); delete the folder to rebuild them.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${1:-est_out}
PHOTOS=${PHOTOS:-photos}
HELDOUT=${HELDOUT:-est_out/heldout}
HELDOUT_CROPS=${HELDOUT_CROPS:-100}
STEPS=${STEPS:-3000}
CROP=${CROP:-32}
SEED=${SEED:-0}
if [ ! -f "$PHOTOS/.complete" ]; then
    echo "error: $PHOTOS/ holds no complete photo set (train.txt, select.txt, report.txt); run make photos first" >&2
    exit 2
fi
export HF_HUB_OFFLINE=1
# Threads pinned: the figures depend on the order of floating-point sums, which the intra-op thread count sets
# (the trainer gives the degrading worker one of them). THREADS=1 for the other order.
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
CFG=$($BIN/python -c "from promptsr.estimator import omit_config_path; print(omit_config_path())")
for split in select report; do
    if [ ! -f "$HELDOUT/$split/build.json" ]; then
        $BIN/sr-degrade build --src "$PHOTOS/$split.txt" --out "$HELDOUT/$split" -c "$CFG" --crop-size 256 \
            --crops-per-image "$HELDOUT_CROPS" --shard-size 2000 --no-embed --workers 1 --seed 1 --overwrite
    fi
done
mkdir -p "$OUT"
$BIN/promptsr estimator train --photos "$PHOTOS/train.txt" --val "$HELDOUT/select" --out "$OUT/estimator" \
    --steps "$STEPS" --crop "$CROP" --seed "$SEED"
for split in select report; do
    echo "## held out: $split ($(paste -sd' ' "$PHOTOS/$split.txt"))"
    $BIN/promptsr estimator eval --estimator "$OUT/estimator" --data "$HELDOUT/$split" --json > "$OUT/eval_$split.json"
    $BIN/python -c 'import json, sys; from promptsr.estimator import eval_markdown; print(eval_markdown(json.load(open(sys.argv[1]))))' "$OUT/eval_$split.json"
done
$BIN/python tools/estimator_seeds.py "$OUT"   # the two sets pooled: the 6 held-out photos
