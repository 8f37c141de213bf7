"""How good a model's one-step x0 estimate is at each timestep, from a correctly noised HR image: the
figures behind "a briefly trained model cannot restore colour from pure noise" (formerly in the
README; docs/model.md has the formulation that replaced it). For each t: PSNR-Y of
x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) against the HR, the RMS error of its 16x16-averaged low
frequencies, and its mean error per RGB channel (in [-1, 1] units).

    python tools/x0_error.py demo_out/model_tiny demo_out/lr/coffee.png demo_out/hr/coffee.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from promptsr.bicubic import bicubic_uint8, bicubic_upsample, to_model_range, to_unit_range
from promptsr.diffusion import train_scheduler
from promptsr.export import load_model
from promptsr.metrics import psnr_y
from sr_degrade.imageio import read_image

TIMESTEPS = (100, 200, 400, 800, 1200, 1600, 1900)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (to_unit_range(x.clamp(-1, 1))[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: python tools/x0_error.py MODEL_DIR LR.png HR.png (the prompt: LR.txt beside it)", file=sys.stderr)
        return 2
    model = load_model(sys.argv[1])
    lr, hr = read_image(sys.argv[2]), read_image(sys.argv[3])
    sidecar = Path(sys.argv[2]).with_suffix(".txt")
    prompt = sidecar.read_text().strip() if sidecar.exists() else ""
    emb = torch.from_numpy(model.lookup(prompt).astype(np.float32))[None]
    mask = torch.ones(1, emb.shape[1], dtype=torch.bool)
    cond = bicubic_upsample(to_model_range(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255), model.scale)
    x0_true = to_model_range(torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255)
    alphas = train_scheduler(model.diffusion).alphas_cumprod
    noise = torch.randn(x0_true.shape, generator=torch.Generator().manual_seed(0))
    print(f"prompt: {prompt!r}; bicubic PSNR-Y {psnr_y(bicubic_uint8(lr, model.scale), hr):.2f} dB")
    print("| t | sqrt(a_t) | x0 PSNR-Y | low-frequency RMS error | mean error R, G, B |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for t in TIMESTEPS:
            a = alphas[t]
            x_t = a.sqrt() * x0_true + (1 - a).sqrt() * noise
            eps = model.unet(x_t, torch.tensor([t]), emb, mask, condition=cond)
            x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
            low = (F.avg_pool2d(x0, 16) - F.avg_pool2d(x0_true, 16)).pow(2).mean().sqrt()
            mean = ", ".join(f"{v:+.3f}" for v in (x0 - x0_true).mean((0, 2, 3)).tolist())
            print(f"| {t} | {a.sqrt():.3f} | {psnr_y(to_uint8(x0), hr):.2f} | {low:.3f} | {mean} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
