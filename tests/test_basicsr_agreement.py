"""sr-degrade agrees with BasicSR's degradation functions (basicsr/data/degradations.py, as used by
Real-ESRGAN and the paper's lineage), re-derived here from their published formulas on the bundled
photos: anisotropic Gaussian kernels, Gaussian and Poisson noise, JPEG. The formulas are written out
below from BasicSR's definitions, not imported: its package pulls torchvision, which does not import
beside the CPU torch here.

- Kernel (`bivariate_Gaussian`): Sigma = U diag(sx^2, sy^2) U^T with U = [[cos t, -sin t], [sin t, cos t]];
  on the grid of offsets (x, y) = meshgrid(-k//2+1 .. k//2), k = exp(-0.5 [x y] Sigma^-1 [x y]^T) / sum.
- Gaussian noise (`generate_gaussian_noise`): noise = N(0, 1) * sigma / 255, one field for all channels
  when gray; out = clip(img + noise, 0, 1).
- Poisson noise (`generate_poisson_noise`): img quantised to 8 bits; L = 2^ceil(log2(#distinct values));
  noise = Poisson(img * L) / L - img, times `scale`; gray: one field from the image's luma.
- JPEG (`add_jpg_compression`): cv2.imencode(".jpg", BGR image * 255, quality), decoded, / 255.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import photo

from sr_degrade import ops


def basicsr_kernel(size: int, sx: float, sy: float, theta: float) -> np.ndarray:
    u = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    sigma = u @ np.diag([sx**2, sy**2]) @ u.T
    ax = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    grid = np.stack([xx, yy], axis=-1)
    k = np.exp(-0.5 * np.sum((grid @ np.linalg.inv(sigma)) * grid, axis=2))
    return k / k.sum()


@pytest.mark.parametrize("size", [7, 21, 41])
def test_anisotropic_gaussian_kernels_agree(size):
    rng = np.random.default_rng(size)
    for _ in range(20):
        sx, sy = rng.uniform(0.2, 4.0, 2)
        theta = rng.uniform(-math.pi, math.pi)
        ours = ops.gaussian_kernel(size, sx, sy, theta).astype(np.float64)
        ref = basicsr_kernel(size, sx, sy, theta)
        assert np.abs(ours - ref).max() < 3e-8, (size, sx, sy, theta)
    # The same blur of a real photo as BasicSR's filter2D (cv2 correlation, reflect-101 borders).
    img = photo("coffee").astype(np.float32) / 255.0
    k = basicsr_kernel(size, 3.0, 1.0, 0.7).astype(np.float32)
    ref = cv2.filter2D(img, -1, k)
    assert np.abs(ops.blur(img, ops.gaussian_kernel(size, 3.0, 1.0, 0.7)) - ref).max() < 2e-6


@pytest.mark.parametrize("gray", [False, True])
def test_gaussian_noise_is_basicsrs_formula(gray):
    img = photo("chelsea").astype(np.float32) / 255.0
    sigma = 17.5
    ours = ops.add_gaussian_noise(img, sigma, gray, np.random.default_rng(3))
    z = np.random.default_rng(3).standard_normal(img.shape[:2] + ((1,) if gray else (3,)), dtype=np.float32)
    ref = np.clip(img + z * np.float32(sigma / 255.0), 0, 1)  # broadcast over channels when gray
    assert np.abs(ours - ref).max() < 1e-6


@pytest.mark.parametrize("gray", [False, True])
def test_poisson_noise_has_basicsrs_levels_and_variance(gray):
    img = photo("astronaut").astype(np.float32) / 255.0
    scale = 2.0
    src = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if gray else img
    q = np.clip(np.round(src * 255), 0, 255) / 255.0
    levels = 2 ** math.ceil(math.log2(len(np.unique(q))))
    fields = np.stack([ops.poisson_noise(img, scale, gray, np.random.default_rng(s)) for s in range(8)])
    if gray:
        assert np.array_equal(fields[..., 0], fields[..., 1])  # one field for all channels
    field = fields[..., 0] if gray else fields
    # Poisson(v L) / L - v has mean 0 and variance v / L: per 8-bit value, over 8 draws of every pixel.
    v = np.broadcast_to(q, field.shape)
    for value in (0.2, 0.5, 0.8):
        sel = np.isclose(v, round(value * 255) / 255)
        assert sel.sum() > 2000
        assert abs(field[sel].mean()) < 0.02 * scale
        expected = scale**2 * (round(value * 255) / 255) / levels
        assert field[sel].var() == pytest.approx(expected, rel=0.1), (value, levels)


@pytest.mark.parametrize("quality", [10, 30, 60, 95])
def test_jpeg_is_basicsrs_round_trip(quality):
    img = photo("coffee").astype(np.float32) / 255.0
    bgr = np.ascontiguousarray(img[..., ::-1]).astype(np.float64)
    ok, buf = cv2.imencode(".jpg", (bgr * 255.0).round().astype(np.uint8), [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    ours = np.round(ops.jpeg(img, quality) * 255.0).astype(np.uint8)
    assert ok and np.array_equal(ours, ref)
