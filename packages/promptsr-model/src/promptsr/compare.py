"""Judging an upscale by eye and by number: bicubic | PromptSR | HR side by side, PSNR/SSIM under each.

    bicubic, sheet, scores = compare(lr, sr, hr)

The bicubic image is `bicubic_uint8` of the same LR (the one bicubic that conditions the model and
scores the baseline in `promptsr eval`), so the two columns start from the same pixels. Scores are
PSNR-Y / SSIM-Y as everywhere in PromptSR (BT.601 studio-range Y, border = scale cropped).
"""

from __future__ import annotations

import cv2
import numpy as np

from sr_degrade.errors import SrDegradeError

from .bicubic import bicubic_uint8
from .metrics import psnr_y, ssim_y


def _caption(width: int, lines: list[str]) -> np.ndarray:
    panel = np.full((12 + 24 * len(lines), width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(panel, line, (8, 26 + 24 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def compare(
    lr: np.ndarray,
    sr: np.ndarray,
    hr: np.ndarray | None = None,
    *,
    width: int = 0,
    crop: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, float]]]:
    """(bicubic image, side-by-side sheet, {"bicubic"|"promptsr": {"psnr", "ssim"}}) for one LR/SR(/HR).

    All uint8 RGB; sr must be an integer multiple of lr. Columns: bicubic, PromptSR, and HR when given,
    each captioned with its PSNR-Y / SSIM-Y against the HR. `width` > 0 scales each column to that width
    (area resampling); 0 keeps full resolution. `crop` (x, y, w, h in HR pixels) shows only that
    region of each column (the scores stay those of the whole image): detail at full resolution in a
    small figure.
    """
    if sr.shape[0] % lr.shape[0] or sr.shape[0] // lr.shape[0] != sr.shape[1] / lr.shape[1]:
        raise SrDegradeError(f"the SR image {sr.shape[1]}x{sr.shape[0]} is not a multiple of the LR's size "
                             f"{lr.shape[1]}x{lr.shape[0]}")  # fmt: skip
    scale = sr.shape[0] // lr.shape[0]
    if hr is not None and hr.shape != sr.shape:
        raise SrDegradeError(
            f"the HR image {hr.shape[1]}x{hr.shape[0]} is not the SR's size {sr.shape[1]}x{sr.shape[0]}"
        )
    bicubic = bicubic_uint8(lr, scale)
    scores: dict[str, dict[str, float]] = {}
    columns = [("bicubic", bicubic), ("PromptSR", sr)] + ([("HR", hr)] if hr is not None else [])
    cells = []
    for name, img in columns:
        lines = [name]
        if hr is not None and name != "HR":
            s = {"psnr": psnr_y(img, hr, crop_border=scale), "ssim": ssim_y(img, hr, crop_border=scale)}
            scores[name.lower()] = s
            lines.append(f"PSNR {s['psnr']:.2f} dB  SSIM {s['ssim']:.3f}")
        if crop is not None:
            x, y, w, h = crop
            if w < 1 or h < 1 or x < 0 or y < 0 or x + w > img.shape[1] or y + h > img.shape[0]:
                raise SrDegradeError(
                    f"crop {x},{y},{w},{h} (x,y,w,h) is not inside the {img.shape[1]}x{img.shape[0]} image"
                )
            img = np.ascontiguousarray(img[y : y + h, x : x + w])
        if width:
            h = round(img.shape[0] * width / img.shape[1])
            img = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
        cells.append(np.concatenate([img, _caption(img.shape[1], lines)], axis=0))
    height = max(c.shape[0] for c in cells)
    cells = [np.pad(c, ((0, height - c.shape[0]), (0, 4), (0, 0)), constant_values=255) for c in cells]
    return bicubic, np.concatenate(cells, axis=1)[:, :-4], scores
