#!/usr/bin/env bash
# The degradation estimator's held-out accuracy table in the README ("Prompts for your own photos"):
# shards of the bundled photos built with the shipped omission config (astronaut, hubble_deep_field,
# retina, rocket for training; coffee and chelsea held out, another build seed), 300 crops of 128 HR
# pixels per photo, 3000 training steps, then `promptsr estimator eval`. About 8 minutes on 2 cores.
#   bash tools/estimator_measure.sh [OUT]        (after make setup; OUT defaults to est_out/, git-ignored)
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${1:-est_out}
export HF_HUB_OFFLINE=1
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
for split in train val; do
    seed=$([ "$split" = val ] && echo 1 || echo 0)
    $BIN/sr-degrade build --src "$OUT/photos_$split" --out "$OUT/$split" -c "$CFG" --crop-size 128 \
        --crops-per-image 300 --shard-size 2000 --no-embed --workers 1 --seed "$seed" --overwrite
done
$BIN/promptsr estimator train --data "$OUT/train" --val "$OUT/val" --out "$OUT/estimator" --steps 3000 --width 32
$BIN/promptsr estimator eval --estimator "$OUT/estimator" --data "$OUT/val"
