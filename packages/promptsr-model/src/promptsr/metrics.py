"""Validation metrics: PSNR and SSIM on the Y channel, the convention SR papers report.

Conventions (DESIGN.md section 6; pinned by tests/test_metrics.py):

- Y is BT.601 luma in studio range, as MATLAB's ``rgb2ycbcr``:
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1], so Y lies in [16, 235].
  Y is kept in float64 and not rounded (BasicSR's ``to_y_channel`` convention; MATLAB on uint8 input
  would round Y to integers, which moved PSNR by 0.01 to 0.2 dB on astronaut vs JPEG q10 to q90).
- ``crop_border`` pixels (default 4, the scale) are dropped from each side before either metric.
- PSNR uses a peak of 255: ``10 log10(255^2 / MSE)``; identical images give ``inf``.
- SSIM is Wang et al. 2004: 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  'valid' filtering (no padding: the SSIM map is (H - 10) x (W - 10) after the crop) and the mean of
  that map, as the reference MATLAB ``ssim_index.m`` and BasicSR's ``calculate_ssim``. No automatic
  downsampling (the later ``ssim.m`` downsamples large images; SR papers do not).
- Everything is float64. (pyiqa's ``psnry`` uses YIQ, not this Y: FACTS.md.)
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["psnr_ssim_batch", "psnr_y", "rgb_to_y", "ssim_y"]

#: MATLAB rgb2ycbcr's Y row, for R, G, B in [0, 1]; the three sum to 219 = 235 - 16.
_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def _check_rgb(img: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name} must be an H x W x 3 RGB array, got shape {img.shape}")
    return img


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 studio-range luma of an RGB image.

    `img`: H x W x 3 RGB, uint8 in [0, 255] or float in [0, 1]. Returns float64 H x W, Y in [16, 235].
    Other dtypes, and floats outside [0, 1] (likely a 0..255 float image), raise ValueError.
    """
    img = _check_rgb(img, "image")
    if img.dtype == np.uint8:
        rgb = img.astype(np.float64) / 255.0
    elif np.issubdtype(img.dtype, np.floating):
        rgb = img.astype(np.float64)
        # A float image on the 0..255 scale would silently give Y far above 235: refuse it.
        if rgb.size and (rgb.min() < 0.0 or rgb.max() > 1.0):
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{rgb.min():g}, {rgb.max():g}]; "
                "pass uint8 for 0..255 data"
            )
    else:
        raise ValueError(f"image dtype must be uint8 or float in [0, 1], got {img.dtype}")
    return rgb @ _Y_COEFFS + 16.0


def _cropped_y_pair(sr: np.ndarray, hr: np.ndarray, crop_border: int, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Y of both images with `crop_border` pixels cut from each side; at least `min_side` pixels must remain."""
    sr, hr = _check_rgb(sr, "sr"), _check_rgb(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: sr {sr.shape} vs hr {hr.shape}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    h, w = sr.shape[:2]
    if min(h, w) - 2 * crop_border < min_side:
        raise ValueError(
            f"crop_border {crop_border} on an image of {h} x {w} leaves "
            f"{max(h - 2 * crop_border, 0)} x {max(w - 2 * crop_border, 0)} pixels; "
            f"need at least {min_side} x {min_side}"
        )
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr)
    if crop_border:
        c = crop_border
        y_sr, y_hr = y_sr[c:-c, c:-c], y_hr[c:-c, c:-c]
    return y_sr, y_hr


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 4) -> float:
    """PSNR in dB on Y (peak 255) after cropping `crop_border` pixels per side; inf when identical.

    `sr`, `hr`: H x W x 3 RGB of the same shape, uint8 (or float in [0, 1], see `rgb_to_y`).
    """
    y_sr, y_hr = _cropped_y_pair(sr, hr, crop_border, min_side=1)
    mse = float(np.mean((y_sr - y_hr) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window_1d() -> np.ndarray:
    """The normalised 1-D Gaussian (11 taps, sigma 1.5); its outer product is MATLAB's fspecial window."""
    x = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2
    g = np.exp(-(x**2) / (2.0 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of a 2-D float64 array with window outer(g, g).

    The window is symmetric, so correlation and convolution agree; 'valid' means no padding, the
    output is (H - 10) x (W - 10).
    """
    k = g.size
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=1) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=0) @ g


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 4) -> float:
    """Mean SSIM on Y after cropping `crop_border` pixels per side, in [-1, 1]; 1 when identical.

    `sr`, `hr`: H x W x 3 RGB of the same shape, uint8 (or float in [0, 1]). At least 11 x 11 pixels
    must remain after the crop (one full window; 'valid' filtering, see the module docstring).
    """
    x, y = _cropped_y_pair(sr, hr, crop_border, min_side=_SSIM_WINDOW)
    g = _gaussian_window_1d()
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    # E[x^2] - mu^2, as the reference code; float64 keeps the cancellation error near 1e-11 on 0..255 data.
    var_x = _filter_valid(x * x, g) - mu_x * mu_x
    var_y = _filter_valid(y * y, g) - mu_y * mu_y
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2.0 * mu_x * mu_y + _C1) * (2.0 * cov + _C2)) / (
        (mu_x * mu_x + mu_y * mu_y + _C1) * (var_x + var_y + _C2)
    )
    return float(ssim_map.mean())


def _to_uint8_hwc(t: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8, clamped and rounded half to even like a saved PNG."""
    t = t.detach().to(device="cpu", dtype=torch.float32)
    return torch.round(t.clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def psnr_ssim_batch(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 4) -> tuple[list[float], list[float]]:
    """Per-image PSNR (dB) and SSIM on Y for a batch, as they would be for the saved PNGs.

    `sr`, `hr`: tensors (B, 3, H, W), RGB in [0, 1] (convert [-1, 1] model output with (x + 1) / 2),
    any float dtype and device. Both are clamped to [0, 1] and rounded to uint8 first (half to even,
    as `sr_degrade.ops` and BasicSR's tensor2img), so the numbers match those of the written images.
    Returns (psnr list, ssim list), one entry per image.
    """
    if sr.ndim != 4 or sr.shape[1] != 3:
        raise ValueError(f"sr must be a (B, 3, H, W) tensor, got shape {tuple(sr.shape)}")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: sr {tuple(sr.shape)} vs hr {tuple(hr.shape)}")
    sr_u8, hr_u8 = _to_uint8_hwc(sr), _to_uint8_hwc(hr)
    psnrs = [psnr_y(a, b, crop_border) for a, b in zip(sr_u8, hr_u8)]
    ssims = [ssim_y(a, b, crop_border) for a, b in zip(sr_u8, hr_u8)]
    return psnrs, ssims
