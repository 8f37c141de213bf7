"""The one bicubic upsampling of PromptSR (ours, DESIGN.md section 6).

It builds the LR conditioning in training, in inference and in the evaluation's bicubic baseline,
so all three see exactly the same operator: PyTorch's bicubic (Keys cubic convolution, a = -0.75),
align_corners=False (pixel centres aligned, as OpenCV's INTER_CUBIC), output clamped to the input
range [lo, hi] since cubic interpolation overshoots at edges.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bicubic_upsample(lr: torch.Tensor, scale: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h*scale, w*scale), values clamped to [lo, hi]."""
    if lr.dim() != 4:
        raise ValueError(f"expected a (B, C, h, w) tensor, got shape {tuple(lr.shape)}")
    out = F.interpolate(lr.float(), scale_factor=scale, mode="bicubic", align_corners=False)
    return out.clamp_(lo, hi).to(lr.dtype)


def bicubic_uint8(lr: np.ndarray, scale: int) -> np.ndarray:
    """H x W x 3 uint8 LR -> (scale H) x (scale W) x 3 uint8: the baseline image, rounded like a saved PNG."""
    x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float().div(255.0)
    up = bicubic_upsample(x, scale, 0.0, 1.0)[0].permute(1, 2, 0).mul(255.0).round()
    return up.clamp(0, 255).to(torch.uint8).numpy()


def to_model_range(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x01 * 2.0 - 1.0


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1.0) * 0.5
