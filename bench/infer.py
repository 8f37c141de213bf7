"""Inference latency and memory of the PromptSR denoiser: DDIM-50 and DPM-Solver++ 20 for one
512x512 output at batch 1, and the peak memory of a tiled 2048x2048 output.

Goals on one H100 (issue: upscale): DDIM-50 at 512^2 in bf16 <= 0.6 s (>= 3x faster than the
reference ../shared/bench/paper_dn_anchor.py sampling, run in the same device call by
bench/gpu_check.sh), DPM-Solver++ 20 steps <= 0.25 s, tiled 2048^2 within 8 GiB. Weights are random
(speed does not depend on them); the text embedding has L = 20 tokens of D = 768.

    python bench/infer.py                      # CPU: the tiny preset at small sizes
    python bench/infer.py --preset promptsr_x4 --dtype bf16 [--json F]   # GPU
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from promptsr.diffusion import DiffusionConfig, sample, sampling_scheduler
from promptsr.inference import predict_tiled
from promptsr.trainer import peak_memory_gib
from promptsr.unet import build_unet

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None)
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    ap.add_argument("--size", type=int, default=None, help="output side of the latency cases")
    ap.add_argument("--tiled-size", type=int, default=None, help="output side of the tiled case")
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    preset = args.preset or ("promptsr_x4" if gpu else "tiny")
    size = args.size or (512 if gpu else 128)
    tiled = args.tiled_size or (2048 if gpu else 256)
    dtype = DTYPES[args.dtype] if gpu else torch.float32
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    dim = 768 if preset == "promptsr_x4" else 384
    net = build_unet(preset, cross_attention_dim=dim).to(device, dtype).eval().to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 20, dim, generator=g).to(device, dtype)
    mask = torch.ones(1, 20, dtype=torch.bool, device=device)
    cfg = DiffusionConfig()
    rows = []

    def latency(name: str, steps: int, side: int) -> None:
        cond = (torch.rand(1, 3, side, side, generator=g) * 2 - 1).to(device, dtype)
        sched = sampling_scheduler(name, cfg)
        with torch.no_grad():
            sample(net, cond, emb, mask, sched, 2, generator=torch.Generator().manual_seed(0))  # warm-up
            sync(device)
            t0 = time.perf_counter()
            sample(net, cond, emb, mask, sched, steps, generator=torch.Generator().manual_seed(0))
            sync(device)
        rows.append({"case": f"{name} {steps} steps, {side}^2, batch 1", "seconds": round(time.perf_counter() - t0, 3)})

    latency("ddim", 50, size)
    latency("dpm-solver++", 20, size)
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    x = torch.randn(1, 3, tiled, tiled, generator=g).to(device, dtype)
    cond = torch.zeros_like(x)
    with torch.no_grad():
        t0 = time.perf_counter()
        for t in (1900, 1000):  # memory does not grow with steps: two are enough
            predict_tiled(net, x, cond, torch.tensor([t], device=device), emb, mask, 512 if gpu else 128, 64, 4)
        sync(device)
    rows.append(
        {
            "case": f"tiled {tiled}^2 (tile {512 if gpu else 128}, overlap 64, batch 4), per step",
            "seconds": round((time.perf_counter() - t0) / 2, 3),
            "peak_gib": round(peak_memory_gib(device), 2),
        }
    )
    name = torch.cuda.get_device_name() if gpu else "cpu"
    print(f"{name}; preset {preset}; dtype {str(dtype).replace('torch.', '')}\n")
    print("| case | seconds | peak GiB |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['seconds']} | {r.get('peak_gib', '')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
