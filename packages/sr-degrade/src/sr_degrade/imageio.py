"""Reading and writing images as H x W x 3 uint8 RGB, with clear errors for files that are not.

What `read_image` does with each kind of file (DESIGN.md section 8):

- 8-bit RGB / BGR: read as is (RGB order).
- 16-bit: scaled to 8 bits with rounding (v * 255 / 65535).
- gray (8 or 16-bit): the one channel repeated three times.
- palette: expanded by the decoder.
- with alpha: composited over white (transparent areas have no colour to keep).
- EXIF orientation (JPEG, TIFF): applied, so the pixels are the way the photo is seen.
- empty, truncated or not an image: an `ImageError` naming the file and the reason.
- larger than `max_pixels` (default `MAX_PIXELS`, 100 megapixels): an `ImageError` before any pixel
  is decoded. The size is read from the file's header (`image_size`: PNG, JPEG, WebP, BMP, TIFF,
  PPM/PGM); a file whose header gives no size is refused as unreadable. A tiny file can claim a huge
  image (a 1 MB PNG of 32000 x 32000 decodes to 3 GB), so the header is checked, not the file size.
  Decoding needs about 3 bytes a pixel for 8-bit RGB, up to 8 for 16-bit RGBA, so the default limit
  keeps one image under about 1 GB; raise it with `--max-pixels` (or `max_pixels=`) for larger photos.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

#: Extensions the folder sources read (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: The PNG settings every writer of this project uses (shards, LR outputs). Level 3 of zlib: files
#: ~5% larger than level 9 at several times its speed; part of the codec floor in bench/degrade.py.
PNG_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 3)
#: The largest image (width x height) decoded by default: 100 megapixels (about 300 MB as 8-bit RGB).
MAX_PIXELS = 100_000_000

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(b: memoryview) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            return None
        length = struct.unpack_from(">H", b, i + 2)[0]
        if marker in _JPEG_SOF:
            if i + 9 > len(b):
                return None
            h, w = struct.unpack_from(">HH", b, i + 5)
            return w, h
        i += 2 + length
    return None


def _tiff_size(b: memoryview) -> tuple[int, int] | None:
    e = "<" if b[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(e + "I", b, 4)
    if ifd + 2 > len(b):
        return None
    (n,) = struct.unpack_from(e + "H", b, ifd)
    size: dict[int, int] = {}
    for k in range(n):
        at = ifd + 2 + 12 * k
        if at + 12 > len(b):
            return None
        tag, kind = struct.unpack_from(e + "HH", b, at)
        if tag in (256, 257) and kind in (3, 4):  # ImageWidth, ImageLength as SHORT or LONG
            size[tag] = struct.unpack_from(e + ("H" if kind == 3 else "I"), b, at + 8)[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(b: memoryview) -> tuple[int, int] | None:
    tokens: list[int] = []
    for line in bytes(b[2:1024]).split(b"\n"):
        for tok in line.split(b"#", 1)[0].split():
            if not tok.isdigit():
                return None
            tokens.append(int(tok))
            if len(tokens) == 2:
                return tokens[0], tokens[1]
    return None


def image_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) read from an encoded image's header, without decoding; None when the format is
    not PNG, JPEG, WebP, BMP, TIFF or PPM/PGM or the header is cut short. Cheap: reads a few bytes in
    place (JPEG and TIFF: walks the segment / tag list), never copies the file."""
    b = memoryview(np.ascontiguousarray(data, dtype=np.uint8) if isinstance(data, np.ndarray) else data).cast("B")
    try:
        if b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
            return struct.unpack_from(">II", b, 16)
        if b[:3] == b"\xff\xd8\xff":
            return _jpeg_size(b)
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            chunk = b[12:16]
            if chunk == b"VP8 " and b[23:26] == b"\x9d\x01\x2a":
                w, h = struct.unpack_from("<HH", b, 26)
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L" and b[20] == 0x2F:
                (bits,) = struct.unpack_from("<I", b, 21)
                return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
            if chunk == b"VP8X":
                return 1 + int.from_bytes(b[24:27], "little"), 1 + int.from_bytes(b[27:30], "little")
            return None
        if b[:2] == b"BM":
            (dib,) = struct.unpack_from("<I", b, 14)
            if dib == 12:
                return struct.unpack_from("<HH", b, 18)
            w, h = struct.unpack_from("<ii", b, 18)
            return abs(w), abs(h)
        if b[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(b)
        if len(b) > 2 and b[0] == ord("P") and b[1] in b"123456":
            return _pnm_size(b)
    except (struct.error, IndexError):
        return None
    return None


def check_image_size(
    data: bytes | np.ndarray, name: str = "<bytes>", max_pixels: int | None = MAX_PIXELS
) -> tuple[int, int]:
    """(width, height) from the header of an encoded image, or an ImageError naming `name` when the
    header gives no size or the image is larger than `max_pixels` (None: no limit). Use it before
    decoding anything that came from a user (a decoder allocates what the header claims)."""
    size = image_size(data)
    if size is None:
        raise ImageError(
            f"{name}: not a readable image (not a PNG, JPEG, WebP, BMP, TIFF or PPM/PGM file, or its header is corrupt)"
        )
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: not a readable image (its header claims {w}x{h} pixels)")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the decode limit of {max_pixels / 1e6:g} "
            "megapixels; raise the limit (--max-pixels) or downscale the file"
        )
    return w, h


def _read_url(url: str, head: int | None = None) -> np.ndarray:
    """The bytes of an fsspec URL (the first `head` of them), as uint8. A missing object is an
    ImageError (the builder logs it as unreadable, like a missing file); access denied or an
    unreachable endpoint stays a StorageError, which ends the run: every other photo would fail too."""
    from . import storage

    try:
        if head is None:
            data = storage.read_bytes(url)
        else:
            with storage.open_read(url) as f:
                data = f.read(head)
    except storage.StorageError as e:
        if e.missing:
            raise ImageError(f"{storage.shown(url)}: cannot read the file (no such object)") from None
        raise
    return np.frombuffer(data, dtype=np.uint8)


def _is_url(path: str | Path) -> bool:
    if not isinstance(path, str) or ("://" not in path and "::" not in path):
        return False  # local paths never load fsspec
    from .storage import is_url

    return is_url(path)


#: Bytes read from a URL for `read_image_size`: a header (JPEG: after EXIF, which may hold a thumbnail).
_HEAD = 1 << 20
#: Bytes of a local file read for its header: PNG, WebP, BMP, PPM need 30; a JPEG's EXIF comes first (<= 64 KiB).
_LOCAL_HEAD = 1 << 17


def _read_local(path: Path, count: int = -1) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8, count=count)
    except OSError as e:
        raise ImageError(f"{path}: cannot read the file ({e.strerror or e})") from None


def read_image_size(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) of an image file from its header, nothing decoded; ImageError naming the file
    when it cannot be read, has no readable header, or (with `max_pixels`) is larger than that.
    Only the file's start is read (a local file's first 128 KiB, a URL's first megabyte), the whole
    file only when the header lies further in."""
    if _is_url(path):
        data = _read_url(str(path), _HEAD)
        if image_size(data) is None and data.size == _HEAD:
            data = _read_url(str(path))
        name = str(path)
    else:
        path, name = Path(path), str(path)
        data = _read_local(path, _LOCAL_HEAD)
        if image_size(data) is None and data.size == _LOCAL_HEAD:
            data = _read_local(path)
    if data.size == 0:
        raise ImageError(f"{name}: the file is empty")
    return check_image_size(data, name, max_pixels)


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


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>", max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to H x W x 3 uint8 RGB (see the module doc for each kind); images
    over `max_pixels` are refused from their header, before decoding."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise ImageError(f"{name}: the file is empty")
    check_image_size(buf, name, max_pixels)
    # JPEG and TIFF carry EXIF orientation, which OpenCV applies except with IMREAD_UNCHANGED;
    # other formats keep their alpha channel through IMREAD_UNCHANGED.
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if _is_jpeg_or_tiff(buf) else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as e:  # OpenCV's own limits and decoder failures: one message, never a crash
        reason = " ".join(str(e).split())[-200:]
        raise ImageError(f"{name}: not a readable image (OpenCV: {reason})") from None
    if img is None:
        raise ImageError(f"{name}: not a readable image (unknown format, or the file is corrupt)")
    return to_rgb8(img, bgr=img.ndim == 3 and img.shape[2] >= 3)


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB, or raise an ImageError naming the file (also when
    its header claims more than `max_pixels` pixels: nothing is decoded then). `path` may be an fsspec
    URL (s3://bucket/photos/a.png, read whole through `sr_degrade.storage`)."""
    if _is_url(path):
        return decode_image(_read_url(str(path)), str(path), max_pixels)
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read the file ({e.strerror or e})") from None
    return decode_image(data, str(path), max_pixels)


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
