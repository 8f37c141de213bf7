"""The builder's worker side: one source image -> its samples (crop, degradation, prompt, PNG bytes), and
one sample -> its shard members. Pure functions of (build seed, image key, crop index) and the image, so
that every engine (worker processes, Ray tasks) and every split of the work gives the same bytes.

Sample c of image `key` draws its crop position and its degradation from `sample_rng(seed, key, c)`; its
bytes depend on nothing else (not the worker, not the order of completion, not the part of a split build).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import DegradationConfig
from .errors import ImageError
from .imageio import encode_png, read_image
from .params import degrade, sample_params, sample_rng
from .shards import SCHEMA_VERSION, encode_json, encode_npy
from .text import bins, describe

_JOB: dict[str, Any] = {}


def init_worker(job: dict[str, Any]) -> None:
    """Set up a worker for a build's `job` (config, crop, crops, seed, format, max_pixels)."""
    import cv2

    cv2.setNumThreads(1)  # one image per process; OpenCV threads would oversubscribe the cores
    _JOB.clear()
    _JOB.update(job, config=DegradationConfig.from_dict(job["config"]))


def size_error(path: str, w: int, h: int, crop: int, scale: int) -> str | None:
    """Why an image of w x h pixels gives no sample (too small for the crop, or for the scale), or None."""
    if crop == 0:
        if h // scale == 0 or w // scale == 0:
            return f"{path}: {w}x{h} is smaller than the scale {scale}"
    elif h < crop or w < crop:
        return f"{path}: {w}x{h} is smaller than the crop {crop}; use a smaller --crop-size or 0 (whole image)"
    return None


def process_image(position: int, key: str, path: str, first_crop: int, stop_crop: int | None = None) -> dict[str, Any]:
    """Read one image and make its samples, crop indices first_crop .. stop_crop - 1 (default: to the
    build's crops per image); never raises: an unusable image comes back as {"error": reason}."""
    cfg: DegradationConfig = _JOB["config"]
    crop, seed, fmt = _JOB["crop"], _JOB["seed"], _JOB["format"]
    stop = _JOB["crops"] if stop_crop is None else stop_crop
    scale = cfg.scale
    try:
        full = read_image(path, _JOB["max_pixels"])
    except ImageError as e:
        return {"position": position, "key": key, "error": str(e)}
    h, w = full.shape[:2]
    reason = size_error(path, w, h, crop, scale)
    if reason is not None:
        return {"position": position, "key": key, "error": reason}
    ch, cw = (h // scale * scale, w // scale * scale) if crop == 0 else (crop, crop)
    samples = []
    for c in range(first_crop, stop):
        rng = sample_rng(seed, key, c)
        y = int(rng.integers(0, h - ch + 1)) if crop else 0
        x = int(rng.integers(0, w - cw + 1)) if crop else 0
        hr = np.ascontiguousarray(full[y : y + ch, x : x + cw])
        params = sample_params(cfg, rng)
        lr = degrade(hr, params)
        prompt = describe(params, fmt, rng=rng, cfg=cfg)
        samples.append(
            {
                "crop_index": c,
                "box": [x, y, cw, ch],
                "hr_png": encode_png(hr),
                "lr_png": encode_png(lr),
                "lr_size": [lr.shape[1], lr.shape[0]],
                "params": params.to_dict(),
                "bins": bins(params, cfg),
                "prompt": prompt,
            }
        )
    return {"position": position, "key": key, "image_size": [w, h], "samples": samples}


@dataclass(frozen=True)
class SampleContext:
    """What every sample's json record shares within one build."""

    source_id: str
    seed: int
    prompt_format: str
    scale: int
    encoder_id: dict[str, Any] | None = None
    dim: int | None = None


#: prompt -> (emb.npy bytes, number of tokens L)
Embedding = Callable[[str], tuple[bytes, int]]


class Embeddings:
    """The text encoder behind a cache: each prompt encoded once, alone (its bytes never depend on batching)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.cache: dict[str, tuple[bytes, int]] = {}

    def __call__(self, prompt: str) -> tuple[bytes, int]:
        if prompt not in self.cache:
            emb = self.encoder.encode(prompt)
            self.cache[prompt] = (encode_npy(emb), emb.shape[0])
        return self.cache[prompt]


def sample_members(
    stem: str, result: dict[str, Any], s: dict[str, Any], ctx: SampleContext, embedding: Embedding | None
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """One sample of `process_image`'s result -> (its key, its tar members, its json record)."""
    from .shards import text_key

    key = f"{stem}_c{s['crop_index']}"
    meta: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "source": ctx.source_id,
        "image": text_key(result["key"]),
        "image_size": result["image_size"],
        "crop": s["box"],
        "lr_size": s["lr_size"],
        "seeds": {"build": ctx.seed, "crop_index": s["crop_index"]},
        "params": s["params"],
        "bins": s["bins"],
        "prompt": s["prompt"],
        "prompt_format": ctx.prompt_format,
        "scale": ctx.scale,
        "encoder": None,
    }
    members: dict[str, Any] = {
        "__key__": key,
        "hr.png": s["hr_png"],
        "lr.png": s["lr_png"],
        "txt": s["prompt"].encode("utf-8"),
    }
    if embedding is not None:
        members["emb.npy"], length = embedding(s["prompt"])
        meta["encoder"] = {**(ctx.encoder_id or {}), "L": length, "D": ctx.dim}
    members["json"] = encode_json(meta)
    return key, members, meta
