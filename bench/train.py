"""Training throughput and peak memory of PromptSR, measured through the trainer's own pieces.

The model, optimizer, speed settings and step are the ones `accelerate launch
packages/promptsr-model/train.py` runs (promptsr.trainer.build_model, promptsr.train_step.TrainStep
with resolve_speed's TF32 / channels_last / fused Adam / torch.compile), configured by the same
key=value overrides; only checkpointing, logging and validation are left out. Batches are random
tensors by default (the step alone), or real ones from shards with --shards (the DataLoader,
bicubic upsampling and embeddings included).

GPU goals (issue 9): at least 2x the samples/s of the reference ../shared/bench/paper_dn_anchor.py,
which bench/gpu_check.sh runs in the same device call (>= 150/s on an H100), within 24 GiB, for
promptsr_x4 at batch 16, 256x256, bf16.

    python bench/train.py                                   # the CPU table: tiny and promptsr_x4, small sizes
    python bench/train.py --preset promptsr_x4 --batch 16 --size 256 --dtype bf16 [run.compile=false ...] [--json F]
    python bench/train.py --preset tiny --batch 8 --size 64 --shards shards/train
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from promptsr.config import load_train_config
from promptsr.diffusion import train_scheduler
from promptsr.train_data import Batch, TrainData
from promptsr.train_step import TrainStep, make_optimizer, peak_memory_gib, resolve_speed
from promptsr.trainer import build_model, make_accelerator
from promptsr.unet import count_parameters


def random_batches(batch: int, size: int, dim: int, scale: int, device: torch.device):
    from promptsr.bicubic import bicubic_upsample

    g = torch.Generator().manual_seed(0)
    hr = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    cond = bicubic_upsample((torch.rand(batch, 3, size // scale, size // scale, generator=g) * 2 - 1).to(device), scale)
    emb = torch.randn(batch, 20, dim, generator=g).to(device)
    mask = torch.ones(batch, 20, dtype=torch.bool, device=device)
    while True:
        yield Batch(hr, cond, emb, mask)


def measure(preset: str, batch: int, size: int, dtype: str, steps: int, warmup: int, shards, extra: list[str]) -> dict:
    overrides = [
        f"model.preset={preset}",
        f"optim.batch_size={batch}",
        f"data.crop={size}",
        "run.mixed_precision=" + ("bf16" if dtype == "bf16" else "'no'"),
        "run.output_dir=/tmp/promptsr_bench_train",
        *([f"data.train={shards}", "data.val=null"] if shards else []),
        *extra,
    ]
    cfg = load_train_config(None, overrides)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    speed = resolve_speed(cfg.run, device)
    if shards:
        data = TrainData(cfg)
        encoder = data.encoder_info
        loader = iter(data.loader(batch, 0))
        batches = (data.to_device(next(loader), device) for _ in iter(int, 1))
    else:
        encoder = {"id": "random", "dim": 384 if preset == "tiny" else 768}
        batches = random_batches(batch, size, encoder["dim"], 4, device)
    model = build_model(cfg, encoder)
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), cfg.optim, speed)
    model, optimizer = accelerator.prepare(model, optimizer)
    noise_scheduler = train_scheduler(cfg.diffusion)
    step = TrainStep(accelerator, model, optimizer, noise_scheduler, cfg.optim.grad_clip, speed, cfg.diffusion)
    for _ in range(warmup):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = step(next(batches))
    float(loss)  # waits for the device
    seconds = time.perf_counter() - t0
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "preset": preset,
        "params_m": round(count_parameters(accelerator.unwrap_model(model)) / 1e6, 1),
        "batch": batch,
        "size": size,
        "dtype": dtype,
        "data": "shards" if shards else "random",
        "speed": ", ".join(f"{k}={v}" for k, v in vars(speed).items()),
        "samples_per_s": round(batch * steps / seconds, 2),
        "peak_gib": round(peak_memory_gib(device), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3, help="steps before timing (compilation happens here)")
    ap.add_argument("--shards", help="draw real batches from these training shards (default: random tensors)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    ap.add_argument("overrides", nargs="*", help="training config overrides, e.g. run.compile=false run.tf32=false")
    args = ap.parse_args()
    if args.preset:
        cases = [(args.preset, args.batch or 16, args.size or 256, args.dtype)]
    elif torch.cuda.is_available():
        cases = [("promptsr_x4", 16, 256, d) for d in ("fp32", "bf16")]
    else:
        cases = [("tiny", 8, 64, "fp32"), ("promptsr_x4", 2, 128, "fp32")]
    rows = []
    print("| device | preset | params | batch | size | dtype | data | speed settings | samples/s | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset, batch, size, dtype in cases:
        r = measure(preset, batch, size, dtype, args.steps, args.warmup, args.shards, args.overrides)
        rows.append(r)
        print(
            f"| {r['device']} | {preset} | {r['params_m']}M | {batch} | {size} | {dtype} | {r['data']} | {r['speed']} "
            f"| {r['samples_per_s']} | {r['peak_gib']} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
