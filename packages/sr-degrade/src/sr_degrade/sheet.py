"""Contact sheets: rows of images with a caption, as one RGB array (for previews and the demo)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import cv2
import numpy as np

_BG = 32
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def fit(img: np.ndarray, size: int) -> np.ndarray:
    """`img` scaled to fit a size x size cell (aspect kept), centred on a dark background."""
    h, w = img.shape[:2]
    f = size / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    cell = np.full((size, size, 3), _BG, np.uint8)
    y, x = (size - nh) // 2, (size - nw) // 2
    cell[y : y + nh, x : x + nw] = small
    return cell


def _text_panel(text: str, height: int, width: int) -> np.ndarray:
    panel = np.full((height, width, 3), 255, np.uint8)
    chars = max(8, (width - 16) // 9)
    lines = textwrap.wrap(text or "(empty prompt)", chars) or [""]
    for i, line in enumerate(lines[: max(1, (height - 10) // 22)]):
        cv2.putText(panel, line, (8, 26 + 22 * i), _FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def contact_sheet(
    rows: Sequence[tuple[Sequence[np.ndarray], str]],
    cell: int = 256,
    text_width: int = 360,
    header: Sequence[str] | None = None,
) -> np.ndarray:
    """One H x W x 3 uint8 image: per row, each image fitted to a cell, then the caption."""
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    ncols = max(len(images) for images, _ in rows)
    out = []
    if header:
        head = np.full((30, ncols * cell + text_width, 3), 255, np.uint8)
        for i, title in enumerate(header):
            cv2.putText(head, title, (8 + i * cell, 21), _FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        out.append(head)
    for images, caption in rows:
        cells = [fit(im, cell) for im in images]
        cells += [np.full((cell, cell, 3), _BG, np.uint8)] * (ncols - len(cells))
        out.append(np.concatenate(cells + [_text_panel(caption, cell, text_width)], axis=1))
    return np.concatenate(out, axis=0)
