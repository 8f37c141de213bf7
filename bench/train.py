"""Training throughput and peak memory of the PromptSR denoiser (one optimizer step = forward,
backward and Adam on a batch of noisy HR + bicubic LR with text embeddings).

CPU (default there): the tiny preset and promptsr_x4 at a small batch. GPU: promptsr_x4 at batch 16,
256x256, in fp32 and bf16, eager and torch.compile'd, channels_last, TF32 and cudnn.benchmark on, fused
Adam, the same settings as the reference ../shared/bench/paper_dn_anchor.py, which bench/gpu_check.sh
runs in the same device call so the ratio is measured like with like (goal: >= 2x its samples/s,
peak memory <= 24 GiB on one H100).

    python bench/train.py                                   # the CPU table
    python bench/train.py --preset promptsr_x4 --batch 16 --size 256 --dtype bf16 [--compile] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from promptsr.bicubic import bicubic_upsample
from promptsr.diffusion import DiffusionConfig, train_scheduler
from promptsr.trainer import peak_memory_gib
from promptsr.unet import build_unet, count_parameters

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def measure(preset: str, batch: int, size: int, dtype: str, compile_: bool, steps: int, warmup: int) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    dim = 384 if preset == "tiny" else 768
    model = build_unet(preset, cross_attention_dim=dim).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.99), fused=device.type == "cuda")
    sched = train_scheduler(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    hr = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    cond = bicubic_upsample((torch.rand(batch, 3, size // 4, size // 4, generator=g) * 2 - 1).to(device), 4)
    emb = torch.randn(batch, 20, dim, generator=g).to(device)
    mask = torch.ones(batch, 20, dtype=torch.bool, device=device)
    step_model = torch.compile(model) if compile_ else model
    amp = DTYPES[dtype]

    def step() -> torch.Tensor:
        t = torch.randint(0, 2000, (batch,), device=device)
        noise = torch.randn_like(hr)
        x = torch.cat([sched.add_noise(hr, noise, t), cond], 1).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = F.mse_loss(step_model(x, t, emb, mask).float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss.detach())  # waits for the GPU
    seconds = time.perf_counter() - t0
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "preset": preset,
        "params_m": round(count_parameters(model) / 1e6, 1),
        "batch": batch,
        "size": size,
        "dtype": dtype,
        "compile": compile_,
        "samples_per_s": round(batch * steps / seconds, 2),
        "peak_gib": round(peak_memory_gib(device), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args()
    if args.preset:
        cases = [(args.preset, args.batch or 16, args.size or 256, args.dtype, args.compile)]
    elif torch.cuda.is_available():
        cases = [("promptsr_x4", 16, 256, d, c) for d in ("fp32", "bf16") for c in (False, True)]
    else:
        cases = [("tiny", 8, 64, "fp32", False), ("promptsr_x4", 2, 128, "fp32", False)]
    rows = []
    print("| device | preset | params | batch | size | dtype | compiled | samples/s | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, batch, size, dtype, comp in cases:
        r = measure(preset, batch, size, dtype, comp, args.steps, args.warmup)
        rows.append(r)
        print(
            f"| {r['device']} | {preset} | {r['params_m']}M | {batch} | {size} | {dtype} | {comp} "
            f"| {r['samples_per_s']} | {r['peak_gib']} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
