"""Pure degradation operations on float32 RGB images in [0, 1] (H x W x 3).

No function here draws from a global random state: noise takes an explicit
`numpy.random.Generator`, everything else is deterministic. Callers clip between operations
(`degrade` does); the JPEG round trip is where values are rounded to 8 bits.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from .errors import ImageError

#: OpenCV interpolation flag for each resize mode name of the config.
INTERPOLATION = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
    "lanczos": cv2.INTER_LANCZOS4,
}


# ---- conversions ---------------------------------------------------------------------------------


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return img.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8, rounding half to even after clipping."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def clip01(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0.0, 1.0, out=img)


# ---- blur ----------------------------------------------------------------------------------------


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """A size x size Gaussian kernel summing to 1 (float32).

    Isotropic when `sigma_y` is None (or equal to `sigma_x`). Anisotropic kernels have standard
    deviations `sigma_x`, `sigma_y` (pixels) along axes rotated by `theta` radians
    counter-clockwise from the image x axis: covariance R diag(sx^2, sy^2) R^T.
    Row index is y (downwards), column index is x.
    """
    if size < 1 or size % 2 == 0:
        raise ImageError(f"kernel size must be odd and >= 1, got {size}")
    if sigma_x <= 0 or (sigma_y is not None and sigma_y <= 0):
        raise ImageError(f"kernel sigmas must be > 0, got {sigma_x}, {sigma_y}")
    sigma_y = sigma_x if sigma_y is None else sigma_y
    r = size // 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    c, s = math.cos(theta), math.sin(theta)
    # Coordinates in the kernel's own axes: rotate the grid by -theta.
    u = c * x + s * y
    v = -s * x + c * y
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    k /= k.sum()
    return k.astype(np.float32)


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D convolution of each channel with `kernel`, borders reflected (dcb|abcd|cba).

    A separable (rank-1) kernel, such as every isotropic or axis-aligned Gaussian, is applied as
    two 1-D passes: the same convolution up to float32 rounding, and 5-7x faster for wide kernels.
    OpenCV's filters correlate; flipping the kernel makes them a true convolution (identical for
    the point-symmetric Gaussian kernels, exact for any other kernel a user passes).
    """
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    if flipped.shape[0] > 1:
        u, s, vt = np.linalg.svd(flipped.astype(np.float64))
        if s[1] <= 1e-7 * s[0]:
            root = np.sqrt(s[0])
            ky, kx = (u[:, 0] * root).astype(np.float32), (vt[0] * root).astype(np.float32)
            return cv2.sepFilter2D(img, -1, kx, ky, borderType=cv2.BORDER_REFLECT_101)
    return cv2.filter2D(img, -1, flipped, borderType=cv2.BORDER_REFLECT_101)


# ---- resize --------------------------------------------------------------------------------------


def resize_to(img: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """Resize to exactly height x width with the named interpolation."""
    if height < 1 or width < 1:
        raise ImageError(f"cannot resize to {height}x{width}: sizes must be >= 1")
    if img.shape[0] == height and img.shape[1] == width:
        return img
    out = cv2.resize(img, (width, height), interpolation=INTERPOLATION[mode])
    return out if out.ndim == 3 else out[..., None]


def resize_by(img: np.ndarray, factor: float, mode: str) -> np.ndarray:
    """Resize by `factor` (each side rounded to the nearest pixel, at least 1); factor 1 is the identity."""
    h, w = img.shape[:2]
    return resize_to(img, max(1, round(h * factor)), max(1, round(w * factor)), mode)


# ---- noise ---------------------------------------------------------------------------------------


def gaussian_noise(shape: tuple[int, ...], sigma: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise field, `sigma` on the 0..255 scale; gray = one field for all channels."""
    h, w, ch = shape
    field = rng.standard_normal((h, w, 1 if gray else ch), dtype=np.float32)
    field *= np.float32(sigma / 255.0)
    return np.broadcast_to(field, shape) if gray else field


def poisson_noise(img: np.ndarray, scale: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise field as Real-ESRGAN defines it, times `scale`.

    The image (its luma when gray) is quantised to 8 bits; with n distinct values, each pixel v
    becomes Poisson(v * L) / L with L = 2^ceil(log2(n)); the field is that minus v.
    """
    src = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None] if gray else img
    q = to_uint8(src)
    distinct = int(np.count_nonzero(np.bincount(q.ravel(), minlength=256)))
    levels = 2 ** math.ceil(math.log2(max(distinct, 1)))
    v = q.astype(np.float32) * np.float32(1.0 / 255.0)
    field = poisson_8bit(q, levels, rng).astype(np.float32) * np.float32(1.0 / levels)
    field -= v
    field *= np.float32(scale)
    return np.broadcast_to(field, img.shape) if gray else field


@functools.lru_cache(maxsize=16)
def _poisson_tables(levels: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """CDF and guide tables of Poisson(v * levels / 255) for the 256 values v of a uint8 pixel.

    cdf[v, k] = P(X <= k), k = 0..K-1, with K deep enough in the tail that 1 - P(X <= K-1) < 1e-15
    (that tail is lumped into K-1); guide[v, g] = the smallest k with cdf[v, k] > g / G.
    """
    lam = np.arange(256) * (levels / 255.0)
    size = int(levels + 12.0 * math.sqrt(levels) + 24.0)
    k = np.arange(size)
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, size)))))
    pmf = np.zeros((256, size))
    pmf[0, 0] = 1.0  # v = 0: X = 0 surely
    pmf[1:] = np.exp(k * np.log(lam[1:, None]) - lam[1:, None] - log_fact)
    cdf = np.cumsum(pmf, axis=1)
    cdf[:, -1] = 1.0
    guide_size = size
    steps = np.arange(guide_size) / guide_size
    guide = np.stack([np.searchsorted(row, steps, side="right") for row in cdf])
    return cdf.ravel(), guide.ravel().astype(np.intp), size, guide_size


def poisson_8bit(q: np.ndarray, levels: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson(q * levels / 255) draws for a uint8 array `q`, same shape, int.

    Exact inverse-CDF sampling with a guide table (Chen and Asau): one uniform per pixel and a
    table look-up, then a short binary search for the few pixels the guide leaves below. Same distribution as
    Generator.poisson(q * levels / 255) at about twice its speed, because an 8-bit image has
    at most 256 distinct means, whose tables are computed once per `levels` and cached.
    """
    cdf, guide, size, guide_size = _poisson_tables(int(levels))
    v = q.ravel()
    u = rng.random(v.size)
    pos = u * guide_size  # row v, column floor(u * G) of the guide, as one float index
    pos += v * float(guide_size)
    x = guide[pos.astype(np.intp)]
    base = v.astype(np.intp) * size
    # The guide is at or below the answer; for ~5% of pixels it is below: binary-search those
    # between it and the table end, keeping cdf[lo] <= u < cdf[hi].
    todo = np.flatnonzero(cdf[base + x] <= u)
    base, u = base[todo], u[todo]
    lo, hi = x[todo], np.full(todo.size, size - 1, np.intp)
    while todo.size and (hi - lo > 1).any():
        mid = (lo + hi) // 2
        below = cdf[base + mid] <= u
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    x[todo] = hi
    return x.reshape(q.shape)


def add_gaussian_noise(img: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """img + Gaussian noise (sigma on 0..255), clipped to [0, 1]; sigma 0 returns img unchanged."""
    if sigma == 0:
        return img.copy()
    return clip01(img + gaussian_noise(img.shape, sigma, gray, rng))


def add_poisson_noise(img: np.ndarray, scale: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """img + Poisson noise (Real-ESRGAN's scale), clipped to [0, 1]; scale 0 returns img unchanged."""
    if scale == 0:
        return img.copy()
    return clip01(img + poisson_noise(img, scale, gray, rng))


# ---- compression ---------------------------------------------------------------------------------


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip through OpenCV at integer `quality` (1..100); float [0, 1] in and out.

    The image is rounded to uint8 here (the encoder's input), encoded as 4:2:0 YCbCr and decoded.
    """
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ImageError(f"JPEG quality must be an integer in 1..100, got {quality}")
    bgr = np.ascontiguousarray(to_uint8(img)[..., ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV only fails here on impossible inputs
        raise ImageError("OpenCV failed to JPEG-encode the image")
    return to_float(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
