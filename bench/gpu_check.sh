#!/usr/bin/env bash
# The GPU checks of the model issues in one device call of about 6 minutes: the reference denoiser
# (../shared/bench/paper_dn_anchor.py, copied into .device/ here, which git ignores) and our
# training and inference benchmarks, each stage under its own time limit, each stage's numbers written to $OUT as
# it ends, so a stage that runs long costs only itself.
#
# Prepare on the CPU machine (once), then run through the device tool with carry [".whl", ".device"]:
#   mkdir -p .device && cp ../shared/bench/paper_dn_anchor.py .device/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1     # not on the GPU image
#   (.whl/ is ignored by git: echo /.whl/ >> .git/info/exclude)
#   command: bash bench/gpu_check.sh
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="packages/sr-degrade/src:packages/promptsr-model/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

stage() {  # stage NAME SECONDS command...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "exit $?" >>"$OUT/$name.log"
    tail -n 4 "$OUT/$name.log"
}

stage anchor 150 env OUT="$OUT" python3 .device/paper_dn_anchor.py
stage train_bf16 60 python3 bench/train.py --preset promptsr_x4 --batch 16 --size 256 --dtype bf16 --json "$OUT/train_bf16.json"
stage train_fp32 60 python3 bench/train.py --preset promptsr_x4 --batch 16 --size 256 --dtype fp32 --json "$OUT/train_fp32.json"
stage train_bf16_compiled 180 python3 bench/train.py --preset promptsr_x4 --batch 16 --size 256 --dtype bf16 --compile \
    --steps 20 --json "$OUT/train_bf16_compiled.json"
stage infer_bf16 90 python3 bench/infer.py --preset promptsr_x4 --dtype bf16 --json "$OUT/infer_bf16.json"
echo "tables: $OUT/*.log"
