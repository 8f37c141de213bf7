"""Pure operations: kernels, blur, resize, noise and JPEG on real photos and controlled arrays."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from conftest import photo, photo_crop
from hypothesis import given
from hypothesis import strategies as st

from sr_degrade import ImageError, ops
from sr_degrade.samples import SAMPLE_NAMES

sizes = st.sampled_from([7, 9, 11, 13, 15, 17, 19, 21])
sigmas = st.floats(0.2, 3.0)
thetas = st.floats(0.0, math.pi)


@given(size=sizes, sx=sigmas, sy=sigmas, theta=thetas)
def test_kernels_sum_to_one_and_are_point_symmetric(size, sx, sy, theta):
    for k in (ops.gaussian_kernel(size, sx), ops.gaussian_kernel(size, sx, sy, theta)):
        assert k.shape == (size, size) and k.dtype == np.float32
        assert k.sum() == pytest.approx(1.0, abs=1e-5)
        assert (k >= 0).all()
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-7)


@given(size=sizes, sigma=sigmas)
def test_isotropic_kernel_is_symmetric_under_flips_and_transpose(size, sigma):
    k = ops.gaussian_kernel(size, sigma)
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    np.testing.assert_allclose(k, k[::-1], atol=1e-7)
    np.testing.assert_allclose(k, k[:, ::-1], atol=1e-7)
    assert k.argmax() == (size * size) // 2


@given(size=sizes, sx=sigmas, sy=sigmas)
def test_rotated_anisotropic_kernel_is_the_rotation_of_the_unrotated_one(size, sx, sy):
    k0 = ops.gaussian_kernel(size, sx, sy, 0.0)
    # A quarter turn of the kernel's axes is a quarter turn of the grid; a half turn changes nothing.
    np.testing.assert_allclose(ops.gaussian_kernel(size, sx, sy, math.pi / 2), np.rot90(k0), atol=1e-6)
    np.testing.assert_allclose(ops.gaussian_kernel(size, sx, sy, math.pi), k0, atol=1e-6)
    # Swapping the sigmas is the same as a quarter turn.
    np.testing.assert_allclose(ops.gaussian_kernel(size, sy, sx, 0.0), np.rot90(k0), atol=1e-6)


@given(theta=thetas, sx=st.floats(1.6, 2.5), sy=st.floats(0.8, 1.2))
def test_anisotropic_kernel_covariance_has_the_requested_axes(theta, sx, sy):
    # A 21-wide kernel holds > 99.9% of the mass for sigma <= 2.5, and for sigma >= 0.8 sampling
    # keeps the continuous variance: the second moments are R diag(sx^2, sy^2) R^T, so the long
    # axis points along theta (y down, x right).
    k = ops.gaussian_kernel(21, sx, sy, theta).astype(np.float64)
    y, x = np.mgrid[-10:11, -10:11]
    cov = np.array([[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]])
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    expected = rot @ np.diag([sx**2, sy**2]) @ rot.T
    np.testing.assert_allclose(cov, expected, atol=0.02 * sx**2)


def test_blur_is_a_true_convolution_with_reflected_borders():
    rng = np.random.default_rng(0)
    img = rng.random((9, 11, 3), dtype=np.float32)
    kernel = rng.random((5, 5)).astype(np.float32)  # not symmetric: tells convolution from correlation
    out = ops.blur(img, kernel)
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")  # dcb|abcd|cba
    ref = np.zeros_like(img, dtype=np.float64)
    for dy in range(5):
        for dx in range(5):
            # (f * k)(y, x) = sum_u f(y - u) k(u), u = d - 2
            ref += kernel[dy, dx] * padded[4 - dy : 4 - dy + 9, 4 - dx : 4 - dx + 11]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_blur_with_a_unit_kernel_is_the_identity_and_keeps_flat_images_flat(astronaut):
    img = ops.to_float(astronaut)
    np.testing.assert_array_equal(ops.blur(img, np.ones((1, 1), np.float32)), img)
    flat = np.full((40, 50, 3), 0.3, np.float32)
    np.testing.assert_allclose(ops.blur(flat, ops.gaussian_kernel(21, 3.0, 1.0, 0.7)), flat, atol=1e-6)


@given(name=st.sampled_from(SAMPLE_NAMES), size=sizes, sigma=sigmas)
def test_blur_keeps_shape_dtype_range_and_smooths(name, size, sigma):
    h, w = photo(name).shape[:2]
    img = ops.to_float(photo_crop(name, h // 2 - 48, w // 2 - 64, 96, 128))  # centre: real texture
    out = ops.blur(img, ops.gaussian_kernel(size, sigma))
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert np.abs(np.diff(out, axis=1)).mean() < np.abs(np.diff(img, axis=1)).mean()


@pytest.mark.parametrize("mode", list(ops.INTERPOLATION))
def test_resize_shapes_identity_and_flat_images(mode, astronaut):
    img = ops.to_float(astronaut[:100, :150])
    assert ops.resize_by(img, 1.0, mode) is img
    assert ops.resize_by(img, 0.15, mode).shape == (15, 22, 3)
    assert ops.resize_by(img, 1.5, mode).shape == (150, 225, 3)
    assert ops.resize_to(img, 25, 37, mode).shape == (25, 37, 3)
    assert ops.resize_to(img, 25, 37, mode).dtype == np.float32
    assert ops.resize_by(img[:2, :2], 0.15, mode).shape == (1, 1, 3)  # never below one pixel
    flat = np.full((64, 64, 3), 0.6, np.float32)
    np.testing.assert_allclose(ops.resize_to(flat, 16, 16, mode), 0.6, atol=1e-6)


def test_resize_mode_matters_on_a_real_photo(astronaut):
    img = ops.to_float(astronaut)
    outs = {m: ops.resize_to(img, 128, 128, m) for m in ("area", "bilinear", "bicubic")}
    assert not np.allclose(outs["area"], outs["bilinear"])
    assert not np.allclose(outs["bilinear"], outs["bicubic"])


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("sigma", [1.0, 10.0, 30.0])
def test_gaussian_noise_has_the_requested_std(sigma, gray):
    flat = np.full((256, 256, 3), 0.5, np.float32)
    field = ops.gaussian_noise(flat.shape, sigma, gray, np.random.default_rng(1))
    assert field.shape == flat.shape
    assert field.std() == pytest.approx(sigma / 255, rel=0.05)
    assert abs(field.mean()) < 0.05 * sigma / 255
    same = np.array_equal(field[..., 0], field[..., 1]) and np.array_equal(field[..., 1], field[..., 2])
    assert same == gray
    noisy = ops.add_gaussian_noise(flat, sigma, gray, np.random.default_rng(1))
    assert noisy.std() == pytest.approx(sigma / 255, rel=0.05)  # 0.5 +- 4 sigma stays inside [0, 1]


@pytest.mark.parametrize("gray", [False, True])
def test_poisson_noise_variance_follows_the_signal(gray):
    # Two flat halves at v = 0.2 and 0.7: two distinct values, so L = 2, and the field is
    # scale * (Poisson(v L) / L - v), of variance scale^2 v / L.
    img = np.empty((256, 512, 3), np.float32)
    img[:, :256], img[:, 256:] = 51 / 255, 178 / 255
    scale = 0.5
    field = ops.poisson_noise(img, scale, gray, np.random.default_rng(2))
    for half, v in ((field[:, :256], 51 / 255), (field[:, 256:], 178 / 255)):
        assert half.var() == pytest.approx(scale**2 * v / 2, rel=0.05)
        assert abs(half.mean()) < 0.01
    assert field[:, 256:].var() / field[:, :256].var() == pytest.approx(178 / 51, rel=0.08)
    same = np.array_equal(field[..., 0], field[..., 2])
    assert same == gray


def test_zero_strength_noise_is_the_identity(astronaut):
    img = ops.to_float(astronaut)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(ops.add_gaussian_noise(img, 0.0, False, rng), img)
    np.testing.assert_array_equal(ops.add_poisson_noise(img, 0.0, True, rng), img)


@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(SAMPLE_NAMES), gray=st.booleans())
def test_noise_is_a_function_of_the_generator_only(seed, name, gray):
    img = ops.to_float(photo_crop(name, seed, seed // 7, 64, 64))
    a = ops.add_poisson_noise(img, 1.0, gray, np.random.default_rng(seed))
    np.random.seed(seed ^ 1)  # noqa: NPY002 - global state must not matter
    np.random.random(1000)  # noqa: NPY002
    b = ops.add_poisson_noise(img, 1.0, gray, np.random.default_rng(seed))
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.dtype == np.float32


def test_lower_jpeg_quality_gives_larger_error():
    for name in ("astronaut", "coffee", "chelsea"):
        img = ops.to_float(photo(name))
        errors = [np.abs(ops.jpeg(img, q) - img).mean() for q in (95, 75, 50, 30, 10)]
        assert errors == sorted(errors), (name, errors)
        out = ops.jpeg(img, 60)
        assert out.shape == img.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_jpeg_keeps_colour_channels_in_rgb_order():
    red = np.zeros((64, 64, 3), np.float32)
    red[..., 0] = 1.0
    out = ops.jpeg(red, 90)
    assert out[..., 0].mean() > 0.9 and out[..., 2].mean() < 0.1


def test_jpeg_matches_an_opencv_round_trip_of_the_rounded_image(astronaut):
    img = ops.to_float(astronaut)
    _ok, buf = cv2.imencode(".jpg", astronaut[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 42])
    expected = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(ops.to_uint8(ops.jpeg(img, 42)), expected)


@pytest.mark.parametrize("quality", [0, 101])
def test_jpeg_quality_out_of_range_is_refused(quality):
    with pytest.raises(ImageError, match="quality"):
        ops.jpeg(np.zeros((8, 8, 3), np.float32), quality)


def test_uint8_conversions_round_trip(astronaut):
    assert np.array_equal(ops.to_uint8(ops.to_float(astronaut)), astronaut)
    assert ops.to_uint8(np.array([-0.5, 0.5, 1.7])).tolist() == [0, 128, 255]


def test_separable_kernels_take_the_fast_path_and_give_the_same_convolution(astronaut):
    img = ops.to_float(astronaut)
    for kernel in (ops.gaussian_kernel(21, 2.7), ops.gaussian_kernel(13, 2.0, 0.6, 0.0)):  # both rank 1
        direct = cv2.filter2D(img, -1, kernel[::-1, ::-1].copy(), borderType=cv2.BORDER_REFLECT_101)
        np.testing.assert_allclose(ops.blur(img, kernel), direct, atol=2e-6)


@pytest.mark.parametrize(("levels", "value"), [(256, 0), (256, 1), (256, 77), (256, 255), (2, 200), (1, 128)])
def test_poisson_sampler_draws_the_poisson_distribution(levels, value):
    # Compare the histogram with the exact pmf: every bin within 5 standard errors.
    n = 200_000
    lam = value * levels / 255
    x = ops.poisson_8bit(np.full(n, value, np.uint8), levels, np.random.default_rng(value))
    assert x.mean() == pytest.approx(lam, abs=5 * math.sqrt(max(lam, 1e-9) / n) + 1e-12)
    k = np.arange(int(lam + 8 * math.sqrt(lam) + 10))
    pmf = np.exp(k * math.log(lam) - lam - np.array([math.lgamma(i + 1) for i in k])) if lam > 0 else (k == 0) * 1.0
    observed = np.bincount(x, minlength=k.size)[: k.size] / n
    np.testing.assert_array_less(np.abs(observed - pmf), 5 * np.sqrt(pmf * (1 - pmf) / n) + 1e-4)
