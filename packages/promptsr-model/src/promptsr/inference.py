"""Upscaling with prompts: any image size through overlapping tiles blended at every step.

    from promptsr.inference import Upscaler
    up = Upscaler("model/")
    sr = up.upscale(lr_uint8, "light blur, downsample, heavy noise", steps=50, seed=0)

Tiling (for images larger than one tile). At every denoising step the whole noisy image is cut into
overlapping tiles of `tile` HR pixels, every tile's noise is predicted (`batch` tiles at a time),
and the predictions are averaged where tiles overlap with smooth weights (a linear ramp over the
overlap, so each tile fades out towards its inner edges); the scheduler then steps the whole image
at once. The initial noise is drawn once for the whole image, so the result does not depend on the
tile grid except through the model's receptive field. The blend is accumulated in float32 whatever
the model's dtype, and each tile's inputs are sliced from the noisy image and the conditioning (no
image-sized concatenation).

Memory. The sampling state (the float32 trajectory, the conditioning, the blended noise and the
scheduler's temporaries: about seven float32 copies of the output at the peak of a DDIM step; see
`STATE_COPIES`) lives on the model's GPU while it fits in `device_share` (default 25%) of the
GPU's memory, so small images never leave the device; above that it lives in host memory and only
a batch of tiles travels to the GPU, so device memory is set by `tile` and `batch` alone. On the CPU
everything is host memory.

Sizes. The denoiser needs sides that are multiples of its size multiple (8 for promptsr_x4); an LR
image whose HR size is not is padded by reflection and the result cropped back, so the output is
exactly scale x the input. The colour fix reads its statistics from the cropped image.

Speed options (`Upscaler(..., tf32=, channels_last=, compile=)`, and `promptsr upscale` flags):
TF32 matmuls and convolutions and channels_last weights are on by default on a CUDA device and off
on the CPU; torch.compile is off by default (its compile time, tens of seconds for promptsr_x4, is
paid once per process and tile shape: worth it for folders and evaluations, not for one image).
Asking for one that this machine cannot use falls back with one notice on stderr.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sr_degrade.errors import PromptError, SrDegradeError
from sr_degrade.text import parse_prompt

from .bicubic import bicubic_upsample, to_model_range
from .diffusion import check_clip, check_strength, sample_with, sampling_scheduler
from .export import PromptSRModel, load_model
from .speed import compile_backend, enable_tf32, notice, wanted

COLOR_FIXES = ("none", "adain", "wavelet")

#: Float32 copies of the (padded) output image the sampling state takes at its peak, beside the
#: model: x, the conditioning, the blended noise and up to four scheduler temporaries (DDIM's step).
#: Used to decide whether the state fits on the GPU (`Upscaler.device_share`).
STATE_COPIES = 8

#: Share of the machine's physical memory an upscale may plan to use (`Upscaler.check_fits`).
MEMORY_SHARE = 0.8

#: Wavelet levels of the colour fix: the low band keeps structures wider than about 2^levels pixels.
WAVELET_LEVELS = 5


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


def _blend_weights(length: int, tile: int, overlap: int) -> tuple[list[int], dict[int, torch.Tensor]]:
    """Tile starts along one axis and each tile's 1-D weights, already divided by the sum of the
    weights of all tiles at each pixel: a tile's 2-D weight is the outer product of its two axes'
    weights, and the weights of the tiles covering a pixel sum to one (no normalising pass)."""
    starts = tile_starts(length, tile, overlap)
    ramp = _ramp(tile, overlap if len(starts) > 1 else 0)
    total = torch.zeros(length)
    for s in starts:
        total[s : s + tile] += ramp
    return starts, {s: ramp / total[s : s + tile] for s in starts}


class TiledDenoiser:
    """The sampler's `denoise(x_t, t) -> eps` for a whole (1, 3, H, W) image, tile by tile.

    `model(x, t, emb, mask, condition=c)` runs on `device` in `dtype` (default: `cond`'s) on a batch of
    up to `batch` tiles of the noisy image and of the conditioning, sliced from `x_t` and `cond` wherever
    they live (GPU or host) and moved in one transfer. The blended prediction is accumulated in float32
    on `x_t`'s device.
    """

    def __init__(
        self,
        model: Callable,
        cond: torch.Tensor,
        emb: torch.Tensor,
        mask: torch.Tensor | None,
        tile: int,
        overlap: int,
        batch: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if cond.dim() != 4 or cond.shape[0] != 1:
            raise ValueError(f"tiled prediction takes one (1, C, H, W) image, got {tuple(cond.shape)}")
        _, _, h, w = cond.shape
        self.model, self.cond, self.emb, self.mask, self.batch = model, cond, emb, mask, max(1, batch)
        self.device = torch.device(device) if device is not None else cond.device
        self.dtype = dtype or cond.dtype
        self.th, self.tw = min(tile, h), min(tile, w)
        ys, self.wy = _blend_weights(h, self.th, overlap)
        xs, self.wx = _blend_weights(w, self.tw, overlap)
        self.boxes = [(y, x) for y in ys for x in xs]
        self._weights_on = torch.device("cpu")

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        th, tw, cond = self.th, self.tw, self.cond
        total = torch.zeros(x_t.shape, dtype=torch.float32, device=x_t.device)
        t = t.reshape(-1)[:1].to(self.device)  # one image: its timestep, as a tensor for every tile
        if self._weights_on != x_t.device:
            self.wy = {k: v.to(x_t.device) for k, v in self.wy.items()}
            self.wx = {k: v.to(x_t.device) for k, v in self.wx.items()}
            self._weights_on = x_t.device
        wy, wx = self.wy, self.wx
        for start in range(0, len(self.boxes), self.batch):
            chunk = self.boxes[start : start + self.batch]
            n = len(chunk)
            # Assembled where the image lives, then one transfer; only one batch of tiles is ever copied.
            inp = torch.empty((2, n, x_t.shape[1], th, tw), dtype=self.dtype, device=x_t.device)
            for k, (y, x) in enumerate(chunk):
                inp[0, k].copy_(x_t[0, :, y : y + th, x : x + tw])
                inp[1, k].copy_(cond[0, :, y : y + th, x : x + tw])
            inp = inp.to(self.device)
            mask = None if self.mask is None else self.mask.expand(n, -1)
            emb = None if self.emb is None else self.emb.expand(n, -1, -1)
            eps = self.model(inp[0], t.expand(n), emb, mask, condition=inp[1])
            del inp
            eps = eps.to(x_t.device, torch.float32)
            for k, (y, x) in enumerate(chunk):
                e = eps[k].mul_(wy[y][:, None]).mul_(wx[x][None, :])
                total[0, :, y : y + th, x : x + tw] += e
        return total


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
    """The model's noise prediction for a whole (1, 3, H, W) image, tile by tile, blended (float32)."""
    return TiledDenoiser(model, cond, emb, mask, tile, overlap, batch)(x, t)


def _blur_121(img: torch.Tensor, hole: int, dim: int) -> torch.Tensor:
    """[1 2 1] / 4 along `dim` (2: rows, 3: columns) with `hole` pixels between the taps, edges replicated.
    Shifted slices rather than a dilated convolution, whose CPU kernel unfolds nine copies of the image."""
    n = img.shape[dim]
    pad = F.pad(img, (0, 0, hole, hole) if dim == 2 else (hole, hole, 0, 0), mode="replicate")
    out = pad.narrow(dim, 0, n) + pad.narrow(dim, 2 * hole, n)
    return out.add_(pad.narrow(dim, hole, n), alpha=2.0).mul_(0.25)


def _atrous_low(img: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """The lowest band of an a-trous (stationary) wavelet decomposition of (B, C, H, W) `img`:
    `levels` passes of the 3x3 kernel [1 2 1]^T [1 2 1] / 16 (weights 1/16, 1/8, 1/4) with holes
    (dilation) 1, 2, 4, ..., edges replicated. The image minus it is the sum of the detail bands."""
    for level in range(levels):
        img = _blur_121(_blur_121(img, 2**level, 2), 2**level, 3)
    return img


def color_fix(sr: torch.Tensor, reference: torch.Tensor, method: str, *, inplace: bool = False) -> torch.Tensor:
    """Pull the SR colours toward the reference (the bicubic-upsampled LR), both (B, 3, H, W) in [0, 1].

    adain: match each channel's mean and standard deviation. wavelet (as StableSR's colour fix):
    decompose both with an a-trous wavelet (`_atrous_low`, 5 levels) and keep the SR's detail bands
    on top of the reference's lowest band. The result is clamped to [0, 1]; with `inplace` it is
    written into `sr` (no output-sized copy). "none" returns `sr` itself.
    """
    if method in (None, "none"):
        return sr
    if not inplace:
        sr = sr.clone()
    if method == "adain":
        dims = (2, 3)
        s_mean, s_std = sr.mean(dims, keepdim=True), sr.std(dims, keepdim=True) + 1e-6
        r_mean, r_std = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
        return sr.sub_(s_mean).div_(s_std).mul_(r_std).add_(r_mean).clamp_(0, 1)
    if method == "wavelet":
        for c in range(sr.shape[1]):  # a channel at a time: the decomposition's temporaries stay small
            band = sr[:, c : c + 1]
            band.sub_(_atrous_low(band)).add_(_atrous_low(reference[:, c : c + 1]))
        return sr.clamp_(0, 1)
    raise SrDegradeError(f"unknown colour fix {method!r}: choose one of {', '.join(COLOR_FIXES)}")


def _to_uint8(x: torch.Tensor, cond: torch.Tensor | None, height: int, width: int, color: str) -> np.ndarray:
    """The sampler's (1, 3, H', W') result in [-1, 1] (overwritten) -> height x width x 3 uint8: the
    padding cropped first, then the colour fix against `cond` (the conditioning, [-1, 1]), in place."""
    out = x[:, :, :height, :width].add_(1.0).mul_(0.5)  # to [0, 1] in place: a view of x, no copy
    if color not in (None, "none"):
        ref = cond[:, :, :height, :width].to(x.device, torch.float32, copy=True).add_(1.0).mul_(0.5)
        color_fix(out, ref, color, inplace=True)
        del ref
    image = torch.empty((height, width, 3), dtype=torch.uint8, device=x.device)
    image.permute(2, 0, 1).copy_(out[0].mul_(255.0).round_().clamp_(0, 255))  # exact integers: no rounding left
    return image.cpu().numpy()


class _FallbackOnError:
    """A compiled model that runs eagerly from the first failure on (compilation happens at the first
    call and at each new input shape), after one notice."""

    def __init__(self, compiled: Callable, eager: Callable, backend: str):
        self.compiled, self.eager, self.backend = compiled, eager, backend

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # any compiler failure (no C++ compiler, no Triton, ...): eager instead
                why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                notice(f"torch.compile ({self.backend}) failed here ({type(e).__name__}: {why}); running uncompiled")
                self.compiled = None
        return self.eager(*args, **kwargs)


def _compiled(net: torch.nn.Module, backend: str | Callable) -> Callable:
    """`net` under torch.compile with `backend` (a name or a dynamo backend callable), or `net` itself
    after one notice where this torch cannot compile. Batch sizes other than the first compile once
    more, with a dynamic batch dimension (torch's automatic dynamic shapes): the last chunk of tiles."""
    usable = compile_backend(backend)
    if usable is None:
        return net
    name = usable if isinstance(usable, str) else getattr(usable, "__name__", "custom")
    return _FallbackOnError(torch.compile(net, backend=usable), net, name)


class Upscaler:
    """A loaded model ready to upscale: prompts to embeddings (table first, the encoder when needed).

    Speed and memory options (module doc): `tf32` and `channels_last` ("auto": on for a CUDA device,
    off on the CPU), `compile` (False; True, "on" or "inductor", another torch.compile backend name
    such as "aot_eager", a backend callable, or "auto": inductor on CUDA only), `device_share` (the
    share of a GPU's memory the whole-image sampling state may take before it moves to the host;
    default 0.25). TF32 is a process-wide torch setting: turning it on here turns it on for the process.
    """

    def __init__(
        self,
        model: PromptSRModel | str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        text_encoder: str | None = None,
        *,
        tf32: bool | str = "auto",
        channels_last: bool | str = "auto",
        compile: bool | str | Callable = False,
        device_share: float = 0.25,
    ):
        self.device = torch.device(device)
        dtypes = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in dtypes:
            raise SrDegradeError(f"unknown --dtype {dtype!r}: use float32 or bfloat16")
        if not 0.0 <= device_share <= 1.0:
            raise SrDegradeError(f"--device-share {device_share} must be in [0, 1] (a share of the GPU's memory)")
        self.dtype = dtypes[dtype]
        self.device_share = device_share
        self.model = model if isinstance(model, PromptSRModel) else load_model(model, device=self.device)
        self.model.unet.to(self.device)
        if self.dtype != torch.float32:
            import diffusers

            level = diffusers.utils.logging.get_verbosity()
            diffusers.utils.logging.set_verbosity_error()  # its "keep in float32: []" note is noise here
            self.model.unet.to(self.dtype)
            diffusers.utils.logging.set_verbosity(level)
        cuda = self.device.type == "cuda"
        self.tf32 = enable_tf32(wanted(tf32, cuda), self.device)
        if cuda:  # tiles are one size: cuDNN's algorithm search is paid once per shape
            torch.backends.cudnn.benchmark = True
        self.channels_last = wanted(channels_last, cuda)
        if self.channels_last:
            self.model.unet.to(memory_format=torch.channels_last)
        if compile == "auto":  # as the trainer's run.compile: on for a CUDA device (not the default here)
            compile = cuda
        backend = "inductor" if compile is True or compile == "on" else compile
        self.compile = backend if backend not in (False, None, "off") else None
        #: What the sampler calls: the model, compiled when asked for (self.model.unet stays the eager module).
        self.net: Callable = self.model.unet if self.compile is None else _compiled(self.model.unet, self.compile)
        self.text_encoder = text_encoder
        self._encoder = None

    @property
    def scale(self) -> int:
        return self.model.scale

    def check_settings(
        self,
        *,
        tile: int = 512,
        overlap: int = 64,
        scheduler: str = "ddim",
        color: str = "none",
        clip: str | None = None,
        strength: float = 1.0,
    ) -> None:
        """An SrDegradeError naming the option for any setting `upscale` cannot run with, before any work."""
        mult = self.model.unet.size_multiple
        if tile % mult or tile < mult:
            raise SrDegradeError(f"--tile {tile} must be a positive multiple of {mult} (the model's size multiple)")
        if not 0 <= overlap < tile:
            raise SrDegradeError(f"--overlap {overlap} must be smaller than the tile ({tile}) and >= 0")
        if color not in (None, *COLOR_FIXES):
            raise SrDegradeError(f"unknown --color-fix {color!r}: choose one of {', '.join(COLOR_FIXES)}")
        try:
            check_clip(self.model.diffusion.clip if clip is None else clip)
            check_strength(strength)
            sampling_scheduler(scheduler, self.model.diffusion)
        except ValueError as e:
            raise SrDegradeError(str(e)) from None

    def max_output_pixels(self) -> int:
        """The largest output (in pixels) whose sampling state fits in this machine's memory: STATE_COPIES
        float32 copies of it, plus the uint8 result, in at most MEMORY_SHARE of the physical memory."""
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(MEMORY_SHARE * total / (STATE_COPIES * 3 * 4 + 3))

    def check_fits(self, height: int, width: int) -> None:
        """An SrDegradeError naming the sizes and the limit when a height x width LR image would need more
        memory than this machine has (`max_output_pixels`), before anything is decoded or allocated."""
        s = self.scale
        pixels, limit = height * width * s * s, self.max_output_pixels()
        if pixels > limit:
            need = pixels * (STATE_COPIES * 3 * 4 + 3) / 2**30
            raise SrDegradeError(
                f"a {width}x{height} LR image makes a {width * s}x{height * s} output, which needs about "
                f"{need:.1f} GiB to sample; this machine allows outputs up to {limit / 1e6:.0f} MP "
                f"({MEMORY_SHARE:.0%} of its memory): upscale it in parts"
            )

    def state_device(self, shape: tuple[int, ...]) -> torch.device:
        """Where the sampling state of a `shape` image lives: the model's GPU while STATE_COPIES float32
        copies of it fit in `device_share` of the GPU's memory, else the host."""
        if self.device.type != "cuda":
            return self.device
        need = STATE_COPIES * math.prod(shape) * 4
        total = torch.cuda.get_device_properties(self.device).total_memory
        return self.device if need <= self.device_share * total else torch.device("cpu")

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
        (promptsr.diffusion.sample_with) and runs that share of the steps.
        """
        if scale is not None and scale != self.scale:
            raise SrDegradeError(f"this model was trained for x{self.scale}; x{scale} is not available from it")
        if lr.ndim != 3 or lr.shape[2] != 3 or lr.dtype != np.uint8:
            raise SrDegradeError(f"expected an H x W x 3 uint8 RGB image, got shape {lr.shape} dtype {lr.dtype}")
        clip = self.model.diffusion.clip if clip is None else clip
        self.check_settings(tile=tile, overlap=overlap, scheduler=scheduler, color=color, clip=clip, strength=strength)
        self.check_fits(*lr.shape[:2])
        mult = self.model.unet.size_multiple
        emb = torch.from_numpy(self.embed(prompt, free_text).astype(np.float32))[None].to(self.device, self.dtype)
        s = self.scale
        h, w = lr.shape[:2]
        step_lr = math.lcm(mult, s) // s  # LR sides padded to a multiple of this
        ph, pw = -h % step_lr, -w % step_lr
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255.0)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        cond = bicubic_upsample(to_model_range(x), s)
        where = self.state_device(cond.shape)
        cond = cond.to(where, self.dtype)
        mask = torch.ones(1, emb.shape[1], dtype=torch.bool, device=self.device)
        denoise = TiledDenoiser(self.net, cond, emb, mask, tile, overlap, batch, device=self.device, dtype=self.dtype)
        result = sample_with(
            denoise, cond.shape, sampling_scheduler(scheduler, self.model.diffusion), steps, start=cond,
            device=where, generator=torch.Generator().manual_seed(seed), callback=callback, clip=clip,
            strength=strength, target=self.model.diffusion.target,
        )  # fmt: skip
        del denoise
        return _to_uint8(result, cond, h * s, w * s, color)


def upscale(image: np.ndarray, prompt: str = "", *, model: PromptSRModel | str | Path, **kwargs: Any) -> np.ndarray:
    """One-call Python API: `promptsr.upscale(lr, "light noise, downsample", model="model/")`; the
    Upscaler's options (device, dtype, tf32, channels_last, compile, device_share) go with the others."""
    import inspect

    options = {k: kwargs.pop(k) for k in list(kwargs) if k in inspect.signature(Upscaler).parameters}
    return Upscaler(model, **options).upscale(image, prompt, **kwargs)


__all__ = [
    "COLOR_FIXES",
    "STATE_COPIES",
    "PromptError",
    "TiledDenoiser",
    "Upscaler",
    "color_fix",
    "predict_tiled",
    "tile_starts",
    "upscale",
]
