"""Reading images of every kind a photo folder holds, and clear errors for files that are not images."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from conftest import photo

from sr_degrade import ImageError, read_image, write_image
from sr_degrade.imageio import decode_image, encode_png, to_rgb8


def _write_bgr(path, bgr_or_gray, params=()):
    ok, buf = cv2.imencode(path.suffix, bgr_or_gray, list(params))
    assert ok
    buf.tofile(str(path))


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the Orientation tag (0x0112) after SOI."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)  # big-endian TIFF header, IFD at offset 8
    tiff += struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + app1 + jpeg[2:]


def test_png_round_trip_is_lossless(tmp_path):
    img = photo("chelsea")
    write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(tmp_path / "a.png"), img)
    assert np.array_equal(decode_image(encode_png(img)), img)


def test_gray_images_become_three_equal_channels(tmp_path):
    gray = cv2.cvtColor(photo("astronaut"), cv2.COLOR_RGB2GRAY)
    _write_bgr(tmp_path / "g.png", gray)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (512, 512, 3) and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)


def test_sixteen_bit_images_are_scaled_to_eight_bits(tmp_path):
    rgb = photo("coffee")
    wide = rgb.astype(np.uint16) * 257  # exact 16-bit version of the 8-bit values
    _write_bgr(tmp_path / "w.png", np.ascontiguousarray(wide[..., ::-1]))
    assert cv2.imread(str(tmp_path / "w.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert np.array_equal(read_image(tmp_path / "w.png"), rgb)


def test_alpha_is_composited_over_white(tmp_path):
    rgb = photo("rocket")[:64, :64]
    alpha = np.zeros((64, 64, 1), np.uint8)
    alpha[:, 32:] = 255
    rgba_bgr = np.concatenate([rgb[..., ::-1], alpha], axis=2)
    _write_bgr(tmp_path / "a.png", np.ascontiguousarray(rgba_bgr))
    out = read_image(tmp_path / "a.png")
    assert out.shape == (64, 64, 3)
    assert (out[:, :32] == 255).all() and np.array_equal(out[:, 32:], rgb[:, 32:])


def test_exif_orientation_is_applied(tmp_path):
    rgb = photo("rocket")  # 427 x 640, landscape
    _ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    plain = buf.tobytes()
    (tmp_path / "r.jpg").write_bytes(_with_exif_orientation(plain, 6))  # 6: rotate 90 clockwise to view
    out = read_image(tmp_path / "r.jpg")
    upright = decode_image(plain)
    assert out.shape == (640, 427, 3)
    assert np.array_equal(out, np.rot90(upright, k=-1))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"this is a text file, not a jpeg\n", "not a readable image"),
    ],
)
def test_non_images_are_named_with_the_reason(tmp_path, content, needle):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as err:
        read_image(path)
    assert "fake.jpg" in str(err.value) and needle in str(err.value)


def test_truncated_png_is_reported(tmp_path):
    full = encode_png(photo("astronaut"))
    path = tmp_path / "cut.png"
    path.write_bytes(full[: len(full) // 3])
    with pytest.raises(ImageError, match="cut.png"):
        read_image(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")


def test_to_rgb8_refuses_odd_arrays():
    with pytest.raises(ImageError, match="empty"):
        to_rgb8(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageError, match="float32"):
        to_rgb8(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageError, match="channels"):
        to_rgb8(np.zeros((4, 4, 5), np.uint8))
