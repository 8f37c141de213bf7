"""Inference latency and memory of `promptsr upscale`'s own code path (`Upscaler.upscale`, with its
speed options): DDIM-50 and DPM-Solver++ 20 for one output at batch 1, and the peak host and device
memory of tiled outputs, each of those in a fresh process.

Goals on one H100 (issue 9): DDIM-50 at 512^2 in bf16 <= 0.6 s (>= 3x faster than the reference
../shared/bench/paper_dn_anchor.py sampling, run in the same device call by bench/gpu_check.sh),
DPM-Solver++ 20 steps <= 0.25 s, tiled 2048^2 within 8 GiB. Weights are random (speed does not
depend on them); the prompt's embedding has L = 20 tokens (768-d for promptsr_x4, 384-d for tiny).

    python bench/infer.py                                   # CPU: tiny preset, 128^2 latency, tiled 512^2
    python bench/infer.py --tiled-sizes 2048,8192 --steps 1 --no-latency     # CPU memory cases
    python bench/infer.py --preset promptsr_x4 --dtype bf16 [--compile inductor] [--json F]   # GPU

Host memory: the peak resident set above the process's resident set just before the upscale (Linux
VmHWM after resetting it through /proc/self/clear_refs), also as a count of float32 copies of the
output (3 x H x W x 4 bytes). Device memory: torch.cuda.max_memory_allocated during the upscale,
the weights included.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from promptsr.diffusion import DiffusionConfig
from promptsr.export import PromptSRModel
from promptsr.inference import Upscaler
from promptsr.unet import build_unet
from sr_degrade import DegradationConfig


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _status_kib(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def reset_host_peak() -> int | None:
    """Resets the peak resident set and returns the current one, in bytes (None where this is not Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def host_peak() -> int:
    return _status_kib("VmHWM") * 1024


def make_upscaler(args: argparse.Namespace, device: torch.device) -> Upscaler:
    """Random weights of `args.preset` and a one-prompt table (the empty prompt), in an Upscaler with the
    options the command line gives (as `promptsr upscale` builds it from a model folder)."""
    dim = 768 if args.preset == "promptsr_x4" else 384
    torch.manual_seed(0)
    net = build_unet(args.preset, cross_attention_dim=dim).eval()
    g = torch.Generator().manual_seed(0)
    model = PromptSRModel(
        folder=Path("random-weights"), unet=net, diffusion=DiffusionConfig(), encoder={},
        degradation=DegradationConfig(), meta={"scale": 4},
        table={"": torch.randn(20, dim, generator=g).to(torch.float16).numpy()},
    )  # fmt: skip
    switch = {"on": True, "off": False, "auto": "auto"}
    return Upscaler(
        model, device=str(device), dtype=args.dtype, tf32=switch[args.tf32],
        channels_last=switch[args.channels_last], compile=args.compile, device_share=args.device_share,
    )  # fmt: skip


def lr_image(side: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side // 4, side // 4, 3), dtype=np.uint8)


def latency(up: Upscaler, name: str, steps: int, side: int) -> dict:
    lr = lr_image(side)
    up.upscale(lr, "", steps=2, scheduler=name)  # warm-up (and compilation, when on)
    sync(up.device)
    t0 = time.perf_counter()
    up.upscale(lr, "", steps=steps, scheduler=name)
    sync(up.device)
    return {"case": f"{name} {steps} steps, {side}^2, batch 1", "seconds": round(time.perf_counter() - t0, 3)}


def tiled_case(args: argparse.Namespace, device: torch.device, side: int) -> dict:
    """One tiled upscale of a `side`^2 output (run in a fresh process by `main`)."""
    up = make_upscaler(args, device)
    opts = {"tile": args.tile, "overlap": args.overlap, "batch": args.batch, "steps": args.steps}
    up.upscale(lr_image(min(side, 2 * args.tile)), "", **opts)  # warm-up: allocator, lazy imports, kernels
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    lr = lr_image(side)
    base = reset_host_peak()
    t0 = time.perf_counter()
    up.upscale(lr, "", **opts)
    sync(device)
    seconds = time.perf_counter() - t0
    host = max(0, host_peak() - base) if base is not None else math.nan
    copy = 3 * side * side * 4
    return {
        "case": f"tiled {side}^2, {args.steps} step(s) (tile {args.tile}, overlap {args.overlap}, batch {args.batch})",
        "seconds": round(seconds, 2),
        "state": str(up.state_device((1, 3, side, side))),
        "host_peak_gib": round(host / 2**30, 3),
        "host_copies": round(host / copy, 1),
        "device_peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="promptsr_x4 (default on a GPU) or tiny (default on the CPU)")
    ap.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default: bf16 on a GPU, fp32 on the CPU")
    ap.add_argument("--device", default=None, help="default: cuda when there is one")
    ap.add_argument("--size", type=int, default=None, help="output side of the latency cases (GPU 512, CPU 128)")
    ap.add_argument("--tiled-sizes", default=None, help="comma list of tiled output sides (GPU 2048, CPU 512)")
    ap.add_argument("--steps", type=int, default=1, help="sampling steps of the tiled cases")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--compile", default="off", help="off, or a torch.compile backend (inductor, aot_eager, ...)")
    ap.add_argument("--tf32", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--device-share", type=float, default=0.25)
    ap.add_argument("--no-latency", action="store_true", help="only the tiled memory cases")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child-tiled", type=int, default=None, help=argparse.SUPPRESS)  # one tiled case, JSON out
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    args.preset = args.preset or ("promptsr_x4" if gpu else "tiny")
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    if args.child_tiled:
        print(json.dumps(tiled_case(args, device, args.child_tiled)))
        return
    rows = []
    if not args.no_latency:
        up = make_upscaler(args, device)
        size = args.size or (512 if gpu else 128)
        rows += [latency(up, "ddim", 50, size), latency(up, "dpm-solver++", 20, size)]
        del up
    sizes = [int(s) for s in (args.tiled_sizes or ("2048" if gpu else "512")).split(",") if s]
    child = [
        sys.executable, __file__, "--preset", args.preset, "--dtype", args.dtype, "--device", str(device),
        "--steps", str(args.steps), "--tile", str(args.tile), "--overlap", str(args.overlap),
        "--batch", str(args.batch), "--compile", args.compile, "--tf32", args.tf32,
        "--channels-last", args.channels_last, "--device-share", str(args.device_share),
    ]  # fmt: skip
    for side in sizes:  # each in a fresh process: its peak memory is its own
        r = subprocess.run([*child, "--child-tiled", str(side)], capture_output=True, text=True)
        if r.returncode != 0:
            rows.append({"case": f"tiled {side}^2", "error": (r.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    print(
        f"{name}; preset {args.preset}; dtype {args.dtype}; compile {args.compile}; tf32 {args.tf32}; "
        f"channels_last {args.channels_last}; device_share {args.device_share}\n"
    )
    print("| case | seconds | state on | host peak GiB (output copies) | device peak GiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['case']} | failed: {r['error']} | | | |")
            continue
        host = f"{r['host_peak_gib']} ({r['host_copies']})" if "host_peak_gib" in r else ""
        device_peak = r.get("device_peak_gib")
        print(f"| {r['case']} | {r['seconds']} | {r.get('state', '')} | {host} | {device_peak or ''} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
