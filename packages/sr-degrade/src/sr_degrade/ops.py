"""Pure degradation operations on float32 RGB images in [0, 1] (H x W x 3).

No function here draws from a global random state: noise takes an explicit
`numpy.random.Generator`, everything else is deterministic. Callers clip between operations
(`degrade` does); the JPEG round trip is where values are rounded to 8 bits.
"""

from __future__ import annotations

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

    OpenCV's filter2D correlates; flipping the kernel makes it a true convolution (identical for
    the point-symmetric Gaussian kernels, exact for any other kernel a user passes).
    """
    return cv2.filter2D(img, -1, np.ascontiguousarray(kernel[::-1, ::-1]), borderType=cv2.BORDER_REFLECT_101)


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
    levels = float(2 ** math.ceil(math.log2(max(distinct, 1))))
    v = q.astype(np.float32) * np.float32(1.0 / 255.0)
    field = rng.poisson(v * levels).astype(np.float32) * np.float32(1.0 / levels)
    field -= v
    field *= np.float32(scale)
    return np.broadcast_to(field, img.shape) if gray else field


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
