"""Reading and writing images as H x W x 3 uint8 RGB, with clear errors for files that are not.

What `read_image` does with each kind of file (DESIGN.md section 8):

- 8-bit RGB / BGR: read as is (RGB order).
- 16-bit: scaled to 8 bits with rounding (v * 255 / 65535).
- gray (8 or 16-bit): the one channel repeated three times.
- palette: expanded by the decoder.
- with alpha: composited over white (transparent areas have no colour to keep).
- EXIF orientation (JPEG, TIFF): applied, so the pixels are the way the photo is seen.
- empty, truncated or not an image: an `ImageError` naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

#: Extensions the folder sources read (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: The PNG settings every writer of this project uses (shards, LR outputs). Level 3 of zlib: files
#: ~5% larger than level 9 at several times its speed; part of the codec floor in bench/degrade.py.
PNG_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 3)


def _is_jpeg_or_tiff(data: np.ndarray) -> bool:
    head = bytes(data[:4])
    return head[:3] == b"\xff\xd8\xff" or head in (b"II*\x00", b"MM\x00*")


def to_rgb8(img: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """Any decoded array (gray, gray+alpha, RGB, RGBA; uint8 or uint16) -> H x W x 3 uint8 RGB."""
    if img.size == 0:
        raise ImageError(f"empty image array of shape {img.shape}")
    if img.dtype == np.uint16:
        img = np.rint(img.astype(np.float32) * np.float32(255.0 / 65535.0)).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {img.dtype}: expected 8 or 16-bit integers")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"unsupported image shape {img.shape}: expected H x W with 1 to 4 channels")
    ch = img.shape[2]
    if ch in (2, 4):
        color, alpha = img[..., : ch - 1].astype(np.float32), img[..., ch - 1 :].astype(np.float32) / 255.0
        img = np.rint(color * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        ch -= 1
    if ch == 1:
        return np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., ::-1]) if bgr else img


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to H x W x 3 uint8 RGB (see the module doc for each kind)."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise ImageError(f"{name}: the file is empty")
    # JPEG and TIFF carry EXIF orientation, which OpenCV applies except with IMREAD_UNCHANGED;
    # other formats keep their alpha channel through IMREAD_UNCHANGED.
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if _is_jpeg_or_tiff(buf) else cv2.IMREAD_UNCHANGED
    img = cv2.imdecode(buf, flags)
    if img is None:
        raise ImageError(f"{name}: not a readable image (unknown format, or the file is corrupt)")
    return to_rgb8(img, bgr=img.ndim == 3 and img.shape[2] >= 3)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB, or raise an ImageError naming the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read the file ({e.strerror or e})") from None
    return decode_image(data, str(path))


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode H x W x 3 uint8 RGB as PNG with PNG_PARAMS."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), list(PNG_PARAMS))
    if not ok:  # pragma: no cover
        raise ImageError("OpenCV failed to encode a PNG")
    return buf.tobytes()


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write H x W x 3 uint8 RGB; PNG with PNG_PARAMS, other formats by extension."""
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    params = list(PNG_PARAMS) if ext == ".png" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ImageError(f"{path}: OpenCV cannot write {ext} files")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))
