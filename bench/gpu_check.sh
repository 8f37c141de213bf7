#!/usr/bin/env bash
# The GPU checks of issue 9 (about 9 minutes in all on one H200; see GPU_STAGES to split), each stage under
# its own time limit and writing its numbers to $OUT as it ends (a stage that runs long costs only
# itself), then one table (bench/gpu_table.py) with the goals beside the figures:
#   anchor          the plain reference denoiser (../shared/bench/paper_dn_anchor.py): train + DDIM-50
#   train           the product's training step (bench/train.py: trainer's TrainStep, promptsr_x4, bf16,
#                   batch 16, 256^2), eager; then with the default torch.compile
#   resume          `train.py` on the GPU: 5 steps with EMA, checkpoint, resume, 5 more (the EMA on the device)
#   infer           DDIM-50 and DPM-Solver++ 20 at 512^2 through Upscaler.upscale (promptsr upscale's path),
#                   and the tiled 2048^2 peak memory (bench/infer.py); then the same latencies compiled
# Prepare once on the CPU machine (bench/gpu_prepare.sh), then through the device tool:
#   command: bash bench/gpu_check.sh      carry: [".device"]
# Without a GPU, GPU_CHECK_CPU=1 runs every stage at toy sizes, to check the script itself.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PY:-python3}
if compgen -G ".device/whl/*.whl" >/dev/null && ! $PY -c "import diffusers, webdataset" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="packages/sr-degrade/src:packages/promptsr-model/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/gpu.txt"

SCALE=1
# GPU_STAGES picks stages (default: all). The per-call device limit is 10 minutes and a cold inductor
# compile of the 61M U-Net takes minutes, so a full run may need two calls, e.g.
#   GPU_STAGES="anchor train_eager resume infer"   then   GPU_STAGES="train_compiled infer_compiled"
# (the table reads every stage's JSON in $OUT, so copy the first call's files beside the second's).
STAGES=" ${GPU_STAGES:-anchor train_eager resume infer infer_compiled train_compiled} "
stage() {  # stage NAME SECONDS command...
    local name=$1 limit=$(($2 * SCALE))
    shift 2
    case "$STAGES" in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "exit $rc after $((SECONDS - t0)) s" >>"$OUT/$name.log"
    tail -n 3 "$OUT/$name.log"
}

if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then  # toy sizes on the CPU: the script's own check
    TRAIN=(--preset tiny --batch 4 --size 64 --steps 2 --warmup 1)
    INFER=(--preset tiny --dtype fp32 --size 64 --tiled-sizes 256 --tile 128)
    RESUME=(run.cpu=true)
    export QUICK=1
    SCALE=5  # two CPU cores are no H100
else
    TRAIN=(--preset promptsr_x4 --batch 16 --size 256 --dtype bf16 --steps 10 --warmup 3)
    INFER=(--preset promptsr_x4 --dtype bf16)
    RESUME=(run.mixed_precision=bf16)
fi

stage anchor 70 env OUT="$OUT" $PY .device/paper_dn_anchor.py
stage train_eager 40 $PY bench/train.py "${TRAIN[@]}" --json "$OUT/train_eager.json" run.compile=false
stage resume 120 bash -c '
    set -e
    echo "first run starts at $(date +%T)"
    args=(data.train=.device/shards/train data.val=null data.crop=64 data.num_workers=2 data.shuffle_buffer=16
          model.preset=tiny optim.batch_size=8 optim.ema_decay=0.99 run.output_dir='"$OUT"'/resume_run
          run.checkpoint_every=5 run.log_every=5 run.compile=false '"${RESUME[*]}"')
    '"$PY"' packages/promptsr-model/train.py "${args[@]}" optim.max_steps=5
    echo "first run exited at $(date +%T)"
    '"$PY"' packages/promptsr-model/train.py "${args[@]}" optim.max_steps=10 | tee '"$OUT"'/resume_second.txt
    grep -q "resumed from .* at step 5" '"$OUT"'/resume_second.txt
    grep -q "training complete at step 10" '"$OUT"'/resume_second.txt
    echo "{\"resumed\": true}" > '"$OUT"'/resume.json'
stage infer 60 $PY bench/infer.py "${INFER[@]}" --json "$OUT/infer.json"
stage infer_compiled 240 $PY bench/infer.py "${INFER[@]}" --compile inductor --tiled-sizes 1024 --json "$OUT/infer_compiled.json"
stage train_compiled 240 $PY bench/train.py "${TRAIN[@]}" --json "$OUT/train_compiled.json"
$PY bench/gpu_table.py "$OUT" | tee "$OUT/table.md"
