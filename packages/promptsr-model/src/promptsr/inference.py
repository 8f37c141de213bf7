"""Upscaling with prompts: any image size through overlapping tiles blended at every step.

    from promptsr.inference import Upscaler
    up = Upscaler("model/")
    sr = up.upscale(lr_uint8, "light blur, downsample, heavy noise", steps=50, seed=0)

Tiling (for images larger than one tile). At every denoising step the whole noisy image is cut into
overlapping tiles of `tile` HR pixels, every tile's noise is predicted (`batch` tiles at a time),
and the predictions are averaged where tiles overlap with smooth weights (a linear ramp over the
overlap, so each tile fades out towards its inner edges); the scheduler then steps the whole image
at once. The initial noise is drawn once for the whole image, so the result does not depend on the
tile grid except through the model's receptive field, and memory is bounded by the tile size: only
image-sized tensors of 3 channels are kept beside one batch of tiles.

Sizes. The denoiser needs sides that are multiples of its size multiple (8 for promptsr_x4); an LR
image whose HR size is not is padded by reflection and the result cropped back, so the output is
exactly scale x the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sr_degrade.errors import PromptError, SrDegradeError
from sr_degrade.text import parse_prompt

from .bicubic import bicubic_upsample, to_model_range, to_unit_range
from .diffusion import check_clip, check_strength, sample, sampling_scheduler
from .export import PromptSRModel, load_model

COLOR_FIXES = ("none", "adain", "wavelet")


def _ramp(size: int, overlap: int) -> torch.Tensor:
    """1-D blending weights of a tile: 1 in the middle, a linear ramp to ~0 over `overlap` pixels at both ends."""
    i = torch.arange(size, dtype=torch.float32)
    if overlap <= 0:
        return torch.ones(size)
    return torch.clamp(torch.minimum((i + 0.5) / overlap, (size - i - 0.5) / overlap), max=1.0)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering [0, length) with at least `overlap` shared pixels."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def predict_tiled(
    model: Callable,
    x: torch.Tensor,
    cond: torch.Tensor,
    t: torch.Tensor,
    emb: torch.Tensor,
    mask: torch.Tensor | None,
    tile: int,
    overlap: int,
    batch: int,
) -> torch.Tensor:
    """The model's noise prediction for a whole (1, 3, H, W) image, tile by tile, blended."""
    _, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    weight = (_ramp(th, overlap if len(ys) > 1 else 0)[:, None] * _ramp(tw, overlap if len(xs) > 1 else 0)[None, :]).to(
        x.device, x.dtype
    )
    total = torch.zeros_like(x)
    norm = torch.zeros((1, 1, h, w), device=x.device, dtype=x.dtype)
    boxes = [(y, xx) for y in ys for xx in xs]
    for start in range(0, len(boxes), batch):
        chunk = boxes[start : start + batch]
        inp = torch.cat([torch.cat([x, cond], 1)[:, :, y : y + th, xx : xx + tw] for y, xx in chunk])
        n = len(chunk)
        eps = model(inp, t.expand(n), emb.expand(n, -1, -1), None if mask is None else mask.expand(n, -1))
        for k, (y, xx) in enumerate(chunk):
            total[:, :, y : y + th, xx : xx + tw] += eps[k : k + 1].to(x.dtype) * weight
            norm[:, :, y : y + th, xx : xx + tw] += weight
    return total / norm


def color_fix(sr: torch.Tensor, reference: torch.Tensor, method: str) -> torch.Tensor:
    """Pull the SR colours toward the reference (the bicubic-upsampled LR), both (B, 3, H, W) in [0, 1].

    adain: match each channel's mean and standard deviation. wavelet: keep the SR's detail (the
    image minus its Gaussian low-pass) on top of the reference's low-pass.
    """
    if method in (None, "none"):
        return sr
    if method == "adain":
        dims = (2, 3)
        s_mean, s_std = sr.mean(dims, keepdim=True), sr.std(dims, keepdim=True) + 1e-6
        r_mean, r_std = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
        return ((sr - s_mean) / s_std * r_std + r_mean).clamp(0, 1)
    if method == "wavelet":
        sigma = 4.0
        radius = int(3 * sigma)
        k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=sr.dtype) / sigma) ** 2)
        k = (k / k.sum()).to(sr.device)

        def low(img: torch.Tensor) -> torch.Tensor:
            c = img.shape[1]
            pad = F.pad(img, (radius, radius, radius, radius), mode="replicate")
            out = F.conv2d(pad, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
            return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)

        return (sr - low(sr) + low(reference)).clamp(0, 1)
    raise SrDegradeError(f"unknown colour fix {method!r}: choose one of {', '.join(COLOR_FIXES)}")


class Upscaler:
    """A loaded model ready to upscale: prompts to embeddings (table first, the encoder when needed)."""

    def __init__(
        self,
        model: PromptSRModel | str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        text_encoder: str | None = None,
    ):
        self.device = torch.device(device)
        dtypes = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in dtypes:
            raise SrDegradeError(f"unknown --dtype {dtype!r}: use float32 or bfloat16")
        self.dtype = dtypes[dtype]
        self.model = model if isinstance(model, PromptSRModel) else load_model(model, device=self.device)
        self.model.unet.to(self.device)
        if self.dtype != torch.float32:
            import diffusers

            level = diffusers.utils.logging.get_verbosity()
            diffusers.utils.logging.set_verbosity_error()  # its "keep in float32: []" note is noise here
            self.model.unet.to(self.dtype)
            diffusers.utils.logging.set_verbosity(level)
        self.text_encoder = text_encoder
        self._encoder = None

    @property
    def scale(self) -> int:
        return self.model.scale

    def embed(self, prompt: str, free_text: bool = False) -> np.ndarray:
        """float16 [L, D] for a prompt: checked against the vocabulary (unless free_text), from the
        model's table when it is there, else from the model's own text encoder."""
        parse_prompt(prompt, strict=not free_text, cfg=self.model.degradation)
        found = self.model.lookup(prompt)
        if found is not None:
            return found
        if self._encoder is None:
            from sr_degrade.embed import check_same_encoder, encoder_name, load_text_encoder

            self._encoder = load_text_encoder(self.text_encoder or encoder_name(self.model.encoder))
            check_same_encoder(self.model.encoder, self._encoder.info, "this model")
        return self._encoder.encode(prompt)

    @torch.no_grad()
    def upscale(
        self,
        lr: np.ndarray,
        prompt: str = "",
        *,
        steps: int = 50,
        scheduler: str = "ddim",
        seed: int = 0,
        tile: int = 512,
        overlap: int = 64,
        batch: int = 4,
        color: str = "none",
        free_text: bool = False,
        scale: int | None = None,
        clip: str | None = None,
        strength: float = 1.0,
        callback: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """H x W x 3 uint8 RGB LR -> (scale H) x (scale W) x 3 uint8 RGB.

        `scale`, when given, must be the model's (a model upscales by the factor it was trained for).
        `clip`: how the sampler clips its x0 estimate (promptsr.diffusion.CLIP_MODES); None: the model's setting.
        `strength` < 1 starts from the bicubic image noised to strength x T instead of pure noise
        (promptsr.diffusion.sample) and runs that share of the steps.
        """
        if scale is not None and scale != self.scale:
            raise SrDegradeError(f"this model was trained for x{self.scale}; x{scale} is not available from it")
        if lr.ndim != 3 or lr.shape[2] != 3 or lr.dtype != np.uint8:
            raise SrDegradeError(f"expected an H x W x 3 uint8 RGB image, got shape {lr.shape} dtype {lr.dtype}")
        mult = self.model.unet.size_multiple
        if tile % mult or tile < mult:
            raise SrDegradeError(f"--tile {tile} must be a positive multiple of {mult} (the model's size multiple)")
        if not 0 <= overlap < tile:
            raise SrDegradeError(f"--overlap {overlap} must be smaller than the tile ({tile}) and >= 0")
        clip = self.model.diffusion.clip if clip is None else clip
        try:  # before any work: the sampler checks both too, but only after the prompt is embedded
            check_clip(clip)
            check_strength(strength)
        except ValueError as e:
            raise SrDegradeError(str(e)) from None
        emb = torch.from_numpy(self.embed(prompt, free_text).astype(np.float32))[None].to(self.device, self.dtype)
        s = self.scale
        h, w = lr.shape[:2]
        step_lr = math.lcm(mult, s) // s  # LR sides padded to a multiple of this
        ph, pw = -h % step_lr, -w % step_lr
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255.0)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        cond = bicubic_upsample(to_model_range(x), s).to(self.device, self.dtype)
        sched = sampling_scheduler(scheduler, self.model.diffusion)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(cond.shape, generator=gen, dtype=torch.float32)  # once, for the whole image
        net = self.model.unet
        mask = torch.ones(1, emb.shape[1], dtype=torch.bool, device=self.device)

        def tiled(inp: torch.Tensor, t: torch.Tensor, e: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
            return predict_tiled(net, inp[:, :3], inp[:, 3:], t, e, m, tile, overlap, batch)

        result = sample(
            tiled,
            cond,
            emb,
            mask,
            sched,
            steps,
            generator=gen,
            noise=noise,
            callback=callback,
            clip=clip,
            strength=strength,
        )
        out = to_unit_range(result.cpu())
        out = color_fix(out, to_unit_range(cond.float().cpu()), color)[:, :, : h * s, : w * s]
        return (out[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


def upscale(image: np.ndarray, prompt: str = "", *, model: PromptSRModel | str | Path, **kwargs: Any) -> np.ndarray:
    """One-call Python API: `promptsr.upscale(lr, "light noise, downsample", model="model/")`."""
    device = kwargs.pop("device", "cpu")
    dtype = kwargs.pop("dtype", "float32")
    return Upscaler(model, device=device, dtype=dtype).upscale(image, prompt, **kwargs)


__all__ = ["COLOR_FIXES", "PromptError", "Upscaler", "color_fix", "predict_tiled", "tile_starts", "upscale"]
