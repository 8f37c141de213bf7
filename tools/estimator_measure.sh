#!/usr/bin/env bash
# The degradation estimator's held-out accuracy table in docs/estimator.md:
# trained on 4 bundled photos (astronaut, hubble_deep_field, retina, rocket) degraded afresh for every
# crop with the shipped omission config (`--photos`), 3000 steps of 32 LR crops of 32 pixels; scored
# on shards of the 2 held-out photos (coffee and chelsea, another seed): 300 crops of 256 HR pixels
# each (64 LR pixels, judged by the average over 4 estimator crops), then `promptsr estimator eval`.
# About 10 minutes on 2 cores.
#   bash tools/estimator_measure.sh [OUT]        (after make setup; OUT defaults to est_out/, git-ignored)
#   SEED=1 THREADS=1 bash tools/estimator_measure.sh est_out_s1   (another seed, another thread count)
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${1:-est_out}
export HF_HUB_OFFLINE=1
# Threads pinned: the figures depend on the order of floating-point sums, which the intra-op thread count sets
# (the trainer gives the degrading worker one of them). THREADS=1 for the other order.
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
SEED=${SEED:-0}
CFG=$($BIN/python -c "from promptsr.estimator import omit_config_path; print(omit_config_path())")
mkdir -p "$OUT/photos_train" "$OUT/photos_val"
$BIN/python - "$OUT" <<'PY'
import sys
from pathlib import Path
from sr_degrade.imageio import write_image
from sr_degrade.samples import load_sample
out = Path(sys.argv[1])
for split, names in (("train", ["astronaut", "hubble_deep_field", "retina", "rocket"]), ("val", ["coffee", "chelsea"])):
    for name in names:
        write_image(out / f"photos_{split}" / f"{name}.png", load_sample(name))
PY
$BIN/sr-degrade build --src "$OUT/photos_val" --out "$OUT/val256" -c "$CFG" --crop-size 256 \
    --crops-per-image 300 --shard-size 2000 --no-embed --workers 1 --seed 1 --overwrite
$BIN/promptsr estimator train --photos "$OUT/photos_train" --val "$OUT/val256" --out "$OUT/estimator" --steps 3000 --seed "$SEED"
$BIN/promptsr estimator eval --estimator "$OUT/estimator" --data "$OUT/val256"
