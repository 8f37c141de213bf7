"""PSNR / SSIM on BT.601 studio-range Y (promptsr.metrics) pinned against hand-computed values, a slow
direct SSIM written here, a BasicSR-style cv2.filter2D SSIM, and a real photo under JPEG."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from promptsr.metrics import psnr_ssim_batch, psnr_y, rgb_to_y, ssim_y
from sr_degrade.samples import load_sample

# --- rgb_to_y ---------------------------------------------------------------------------------------


def test_rgb_to_y_hand_computed_pixels() -> None:
    pixels = np.array(
        [
            [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0]],
            [[0, 0, 255], [255, 255, 0], [128, 128, 128], [10, 200, 30]],
        ],
        dtype=np.uint8,
    )
    expected = np.array(
        [
            [16.0, 235.0, 16.0 + 65.481, 16.0 + 128.553],
            [
                16.0 + 24.966,
                16.0 + 65.481 + 128.553,  # yellow
                16.0 + 219.0 * 128.0 / 255.0,  # gray: the three coefficients sum to 219
                16.0 + (654.81 + 25710.6 + 748.98) / 255.0,  # 65.481*10 + 128.553*200 + 24.966*30
            ],
        ]
    )
    y = rgb_to_y(pixels)
    assert y.dtype == np.float64 and y.shape == (2, 4)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-9)


def test_rgb_to_y_float_input_in_unit_range_matches_uint8() -> None:
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(img.astype(np.float64) / 255.0), rgb_to_y(img), rtol=0, atol=1e-9)
    # float32 input is promoted, not computed in single precision
    np.testing.assert_allclose(rgb_to_y((img / 255.0).astype(np.float32)), rgb_to_y(img), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("img", "match"),
    [
        (np.full((4, 4, 3), 200.0), r"float images must lie in \[0, 1\]"),  # a 0..255 float image
        (np.zeros((4, 4, 3), np.uint16), "dtype must be uint8 or float"),
        (np.zeros((4, 4), np.uint8), r"H x W x 3 RGB array, got shape \(4, 4\)"),
        (np.zeros((4, 4, 4), np.uint8), r"got shape \(4, 4, 4\)"),
    ],
)
def test_rgb_to_y_refuses_what_it_cannot_read(img: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rgb_to_y(img)


# --- PSNR -------------------------------------------------------------------------------------------


def _gray(h: int, w: int, v: int) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def test_psnr_constant_difference_is_hand_computed() -> None:
    # +1 on every channel moves Y by d = 219/255 everywhere, so PSNR = 10 log10(255^2 / d^2) = 20 log10(255^2 / 219)
    hr, sr = _gray(16, 16, 100), _gray(16, 16, 101)
    expected = 20.0 * math.log10(255.0**2 / 219.0)
    assert psnr_y(sr, hr) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(sr, hr) == pytest.approx(49.45272492, abs=1e-6)  # the same number, written out


def test_psnr_half_the_pixels_differ_by_one_channel() -> None:
    # Red +10 on 8 of the 16 kept rows: d = 65.481 * 10 / 255 there, 0 elsewhere, so MSE = d^2 / 2.
    hr = _gray(24, 24, 60)
    sr = hr.copy()
    sr[4:12, :, 0] += 10
    d = 65.481 * 10 / 255.0
    expected = 10.0 * math.log10(255.0**2 / (d * d / 2.0))
    assert psnr_y(sr, hr, crop_border=4) == pytest.approx(expected, abs=1e-9)


def test_psnr_of_identical_images_is_inf() -> None:
    img = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    assert psnr_y(img, img.copy()) == math.inf


def test_border_crop_ignores_differences_in_the_border_only() -> None:
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (32, 30, 3), dtype=np.uint8)
    sr = hr.copy()
    noise = rng.integers(0, 256, hr.shape, dtype=np.uint8)
    for sl in (np.s_[:4], np.s_[-4:], np.s_[:, :4], np.s_[:, -4:]):  # a 4-pixel frame on every side
        sr[sl] = noise[sl]
    assert psnr_y(sr, hr, crop_border=4) == math.inf
    assert ssim_y(sr, hr, crop_border=4) == 1.0
    # a smaller crop sees part of the frame
    assert math.isfinite(psnr_y(sr, hr, crop_border=3))
    assert ssim_y(sr, hr, crop_border=3) < 1.0
    assert math.isfinite(psnr_y(sr, hr, crop_border=0))


@pytest.mark.parametrize("pos", [(4, 4), (27, 25), (4, 25), (27, 4)])
def test_border_crop_keeps_the_first_pixels_inside(pos: tuple[int, int]) -> None:
    hr = _gray(32, 30, 120)
    sr = hr.copy()
    sr[pos] = 0  # the corners of the kept 24 x 22 region
    assert math.isfinite(psnr_y(sr, hr, crop_border=4))
    assert ssim_y(sr, hr, crop_border=4) < 1.0


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"sr \(16, 16, 3\) vs hr \(16, 17, 3\)"):
        psnr_y(_gray(16, 16, 0), _gray(16, 17, 0))
    with pytest.raises(ValueError, match=r"sr \(16, 16, 3\) vs hr \(17, 16, 3\)"):
        ssim_y(_gray(16, 16, 0), _gray(17, 16, 0))


def test_non_rgb_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match=r"sr must be an H x W x 3 RGB array, got shape \(16, 16\)"):
        psnr_y(np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"hr must be an H x W x 3 RGB array, got shape \(16, 16, 4\)"):
        ssim_y(_gray(16, 16, 0), np.zeros((16, 16, 4), np.uint8))


def test_border_that_leaves_too_little_names_the_border() -> None:
    with pytest.raises(ValueError, match=r"crop_border 8 on an image of 16 x 20 leaves 0 x 4 pixels"):
        psnr_y(_gray(16, 20, 0), _gray(16, 20, 0), crop_border=8)
    # SSIM needs one full 11 x 11 window after the crop: 20 - 2*5 = 10 is too few
    with pytest.raises(ValueError, match=r"crop_border 5 on an image of 20 x 20 leaves 10 x 10 pixels"):
        ssim_y(_gray(20, 20, 0), _gray(20, 20, 0), crop_border=5)
    assert ssim_y(_gray(21, 21, 0), _gray(21, 21, 0), crop_border=5) == 1.0  # exactly one window
    with pytest.raises(ValueError, match="crop_border must be a non-negative integer, got -1"):
        psnr_y(_gray(16, 16, 0), _gray(16, 16, 0), crop_border=-1)


# --- SSIM -------------------------------------------------------------------------------------------


def _noisy_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth gradient with texture, and a copy with Gaussian noise of sigma 12 (0..255)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([40 + 5 * yy, 200 - 4 * xx, 90 + 3 * (xx + yy)], axis=-1).astype(np.float64)
    hr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).round().astype(np.uint8)
    sr = np.clip(hr + rng.normal(0, 12, hr.shape), 0, 255).round().astype(np.uint8)
    return sr, hr


def _reference_ssim(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    """Direct SSIM: Y written out, a 2-D Gaussian window, and an explicit loop over every 'valid' window
    position with weighted means, variances and covariance (Wang et al. 2004, Eq. 13 and 14)."""

    def y_of(img: np.ndarray) -> np.ndarray:
        f = img.astype(np.float64)
        return 16.0 + (65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]) / 255.0

    ya, yb = y_of(a), y_of(b)
    if crop:
        ya, yb = ya[crop:-crop, crop:-crop], yb[crop:-crop, crop:-crop]
    off = np.arange(11) - 5.0
    win = np.exp(-(off[:, None] ** 2 + off[None, :] ** 2) / (2 * 1.5**2))
    win /= win.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(ya.shape[0] - 10):
        for j in range(ya.shape[1] - 10):
            pa, pb = ya[i : i + 11, j : j + 11], yb[i : i + 11, j : j + 11]
            ma, mb = (win * pa).sum(), (win * pb).sum()
            va, vb = (win * (pa - ma) ** 2).sum(), (win * (pb - mb) ** 2).sum()
            cov = (win * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_of_identical_images_is_one() -> None:
    _, hr = _noisy_pair(np.random.default_rng(3), 24, 24)
    assert ssim_y(hr, hr.copy()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_is_symmetric_and_below_one_for_a_noisy_copy() -> None:
    sr, hr = _noisy_pair(np.random.default_rng(4), 30, 26)
    s = ssim_y(sr, hr)
    assert s == ssim_y(hr, sr)
    assert 0.0 < s < 0.99


@pytest.mark.parametrize(("h", "w", "crop", "seed"), [(20, 20, 0, 5), (24, 27, 2, 6), (20, 21, 0, 7)])
def test_ssim_matches_direct_window_loop(h: int, w: int, crop: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sr, hr = _noisy_pair(rng, h, w)
    assert ssim_y(sr, hr, crop_border=crop) == pytest.approx(_reference_ssim(sr, hr, crop), abs=1e-10)
    # and on plain uniform noise, where the local variances are large
    a, b = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    assert ssim_y(a, b, crop_border=crop) == pytest.approx(_reference_ssim(a, b, crop), abs=1e-10)


# --- a real photo under JPEG ------------------------------------------------------------------------


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _basicsr_style_ssim(y1: np.ndarray, y2: np.ndarray) -> float:
    """BasicSR's _ssim on Y: cv2.filter2D with the 11x11 window, then the 5-pixel 'valid' trim."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.T)

    def filt(z: np.ndarray) -> np.ndarray:
        return cv2.filter2D(z, -1, win)[5:-5, 5:-5]

    m1, m2 = filt(y1), filt(y2)
    s1, s2, s12 = filt(y1 * y1) - m1**2, filt(y2 * y2) - m2**2, filt(y1 * y2) - m1 * m2
    return float((((2 * m1 * m2 + c1) * (2 * s12 + c2)) / ((m1**2 + m2**2 + c1) * (s1 + s2 + c2))).mean())


def test_jpeg_quality_orders_psnr_and_ssim_on_a_real_photo() -> None:
    hr = load_sample("astronaut")
    scores = {q: (psnr_y(_jpeg(hr, q), hr), ssim_y(_jpeg(hr, q), hr)) for q in (10, 30, 90)}
    (p10, s10), (p30, s30), (p90, s90) = scores[10], scores[30], scores[90]
    # measured about 30.3 / 34.2 / 43.1 dB and 0.877 / 0.943 / 0.985 on this photo
    assert 25.0 < p10 < p30 < p90 < 50.0
    assert 0.8 < s10 < s30 < s90 < 0.999


def test_ssim_matches_basicsr_convention_on_a_real_photo() -> None:
    hr = load_sample("astronaut")
    sr = _jpeg(hr, 20)
    y_sr, y_hr = rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4]
    assert ssim_y(sr, hr) == pytest.approx(_basicsr_style_ssim(y_sr, y_hr), abs=1e-12)


# --- batches of tensors -----------------------------------------------------------------------------


def _u8(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) float -> H x W x 3 uint8 as a PNG writer would: clip to [0, 1], x255, round half to even."""
    return np.rint(np.clip(t.permute(1, 2, 0).double().numpy(), 0.0, 1.0) * 255.0).astype(np.uint8)


def test_batch_agrees_with_per_image_metrics_on_rounded_images() -> None:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 3, 24, 28, generator=g)
    sr = (hr + 0.05 * torch.randn(3, 3, 24, 28, generator=g)).clamp(-0.1, 1.1)  # some values outside [0, 1]
    psnrs, ssims = psnr_ssim_batch(sr, hr)
    assert len(psnrs) == len(ssims) == 3
    for i in range(3):
        assert psnrs[i] == psnr_y(_u8(sr[i]), _u8(hr[i]))
        assert ssims[i] == ssim_y(_u8(sr[i]), _u8(hr[i]))
    # it rounds first: the unrounded float images give different numbers
    assert psnrs[0] != psnr_y(sr[0].clamp(0, 1).permute(1, 2, 0).numpy(), hr[0].permute(1, 2, 0).numpy())


def test_batch_passes_crop_border_and_accepts_half_precision() -> None:
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(2, 3, 26, 26, generator=g)
    sr = hr.clone()
    sr[:, :, :2] = 0.0  # differences in the top two rows only
    assert psnr_ssim_batch(sr, hr, crop_border=2) == ([math.inf, math.inf], [1.0, 1.0])
    psnrs, ssims = psnr_ssim_batch(sr.to(torch.bfloat16), hr.to(torch.bfloat16), crop_border=0)
    assert all(math.isfinite(p) for p in psnrs) and all(s < 1.0 for s in ssims)


def test_batch_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) tensor, got shape \(2, 1, 16, 16\)"):
        psnr_ssim_batch(torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"sr \(2, 3, 16, 16\) vs hr \(2, 3, 16, 18\)"):
        psnr_ssim_batch(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 18))
