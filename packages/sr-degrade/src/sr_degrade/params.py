"""What the degradation model applies to one sample: drawing it (`sample_params`) and applying it
(`degrade`).

`sample_params(cfg, rng)` is the only place that draws. It always consumes the generator in the same
fixed sequence (every value of every operation, used or not, then the order and the omissions), so
turning a flexible-format option on or off changes no other parameter of the sample: the paper's
Table 3a compares the same blur, noise and compression in a different order.

`degrade(hr, params)` is a pure function of its inputs: the noise is drawn from a generator seeded by
`params.noise.seed`, never from global state.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import ops
from .config import FIRST_OPS, MAX_KERNEL_SIZE, MAX_RESIZE1_FACTOR, DegradationConfig
from .errors import ImageError, SrDegradeError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BlurParams:
    kind: str  #: "iso" or "aniso"
    kernel_size: int  #: odd width eta
    sigma_x: float  #: pixels
    sigma_y: float  #: pixels; equals sigma_x for "iso"
    theta: float  #: rotation in radians; 0 for "iso"

    @property
    def nominal_sigma(self) -> float:
        """The value binned into light/medium/heavy: sigma, or the mean of the two for anisotropic."""
        return self.sigma_x if self.kind == "iso" else 0.5 * (self.sigma_x + self.sigma_y)

    def kernel(self) -> np.ndarray:
        if self.kind == "iso":
            return ops.gaussian_kernel(self.kernel_size, self.sigma_x)
        return ops.gaussian_kernel(self.kernel_size, self.sigma_x, self.sigma_y, self.theta)


@dataclass(frozen=True)
class Resize1Params:
    mode: str  #: interpolation name
    factor: float  #: gamma1; exactly 1.0 when kept
    kept: bool  #: True for "unchange"


@dataclass(frozen=True)
class NoiseParams:
    kind: str  #: "gaussian" or "poisson"
    level: float  #: Gaussian sigma on 0..255, or the Poisson scale
    gray: bool  #: one noise field shared by the three channels
    seed: int  #: seeds the generator of this sample's noise field


@dataclass(frozen=True)
class JpegParams:
    quality: int


@dataclass(frozen=True)
class Resize2Params:
    mode: str
    scale: int  #: the output is exactly (H // scale, W // scale)


_OP_TYPES = {
    "blur": BlurParams,
    "resize1": Resize1Params,
    "noise": NoiseParams,
    "jpeg": JpegParams,
    "resize2": Resize2Params,
}


@dataclass(frozen=True)
class DegradationParams:
    """The record of one sample's degradation: applied order and each applied op's exact values.

    An omitted operation is None and absent from `order`; resize2 is always last.
    """

    order: tuple[str, ...]
    blur: BlurParams | None
    resize1: Resize1Params | None
    noise: NoiseParams | None
    jpeg: JpegParams | None
    resize2: Resize2Params

    @property
    def scale(self) -> int:
        return self.resize2.scale

    @property
    def omitted(self) -> tuple[str, ...]:
        return tuple(op for op in FIRST_OPS if op not in self.order)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; floats keep every bit (JSON writes the shortest exact repr)."""
        out: dict[str, Any] = {"order": list(self.order)}
        for op in _OP_TYPES:
            value = getattr(self, op)
            out[op] = None if value is None else asdict(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DegradationParams:
        try:
            fields = {op: None if data.get(op) is None else _OP_TYPES[op](**data[op]) for op in _OP_TYPES}
            params = cls(order=tuple(data["order"]), **fields)
        except (KeyError, TypeError) as e:
            raise SrDegradeError(f"not a degradation record ({e}): {data!r}") from None
        missing = [op for op in params.order if getattr(params, op) is None]
        if missing or params.order[-1:] != ("resize2",):
            raise SrDegradeError(f"inconsistent degradation record: order {params.order} vs ops given")
        # A record read from a shard is untrusted: the sizes it implies must stay within the config's bounds.
        k = None if params.blur is None else params.blur.kernel_size
        if k is not None and not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_KERNEL_SIZE):
            raise SrDegradeError(
                f"degradation record: blur kernel_size {params.blur.kernel_size} outside 1..{MAX_KERNEL_SIZE}"
            )
        f = None if params.resize1 is None else params.resize1.factor
        if f is not None and not (isinstance(f, (int, float)) and 0 < f <= MAX_RESIZE1_FACTOR):
            raise SrDegradeError(
                f"degradation record: resize1 factor {params.resize1.factor} outside (0, {MAX_RESIZE1_FACTOR}]"
            )
        return params


def stable_hash(text: str) -> int:
    """A 63-bit hash of `text` that is the same on every machine and Python run (unlike hash()).

    Hashes the UTF-8 bytes; a file name that is not UTF-8 (held by Python as surrogate escapes)
    hashes its original bytes, so every name has a stable key and valid names keep theirs.
    """
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced (e.g. from JSON)
        data = text.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def sample_rng(seed: int, key: str, index: int = 0) -> np.random.Generator:
    """The generator of one sample: seeded by (build seed, stable hash of its source key, crop index).

    Adding a file to a source changes no other sample, and the result never depends on worker
    count or order.
    """
    return np.random.default_rng([int(seed), stable_hash(key), int(index)])


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    names = list(probs)
    return names[int(rng.choice(len(names), p=list(probs.values())))]


def sample_params(cfg: DegradationConfig, rng: np.random.Generator) -> DegradationParams:
    """Draw one sample's degradation from `cfg` with the explicit generator `rng`."""
    b = cfg.blur
    blur_kind = _choice(rng, b.kinds)
    ksize = int(rng.choice(b.kernel_sizes))
    s1 = float(rng.uniform(*b.sigma))
    s2 = float(rng.uniform(*b.sigma))
    theta = float(rng.uniform(*b.rotation))
    if blur_kind == "iso":
        blur = BlurParams("iso", ksize, s1, s1, 0.0)
    else:
        blur = BlurParams("aniso", ksize, s1, s2, theta)

    r1 = cfg.resize1
    r1_mode = _choice(rng, r1.modes)
    kept = bool(rng.random() < r1.p_keep)
    factor = float(rng.uniform(*r1.factor))
    resize1 = Resize1Params(r1_mode, 1.0 if kept else factor, kept)

    n = cfg.noise
    noise_kind = _choice(rng, n.kinds)
    gray = bool(rng.random() < n.p_gray)
    g_sigma = float(rng.uniform(*n.gaussian_sigma))
    p_scale = float(rng.uniform(*n.poisson_scale))
    noise_seed = int(rng.integers(0, 2**63 - 1))
    noise = NoiseParams(noise_kind, g_sigma if noise_kind == "gaussian" else p_scale, gray, noise_seed)

    jpeg = JpegParams(int(rng.integers(cfg.jpeg.quality[0], cfg.jpeg.quality[1] + 1)))
    resize2 = Resize2Params(_choice(rng, cfg.resize2.modes), cfg.scale)

    perm = rng.permutation(len(FIRST_OPS))
    drop = rng.random(len(FIRST_OPS))
    first = tuple(cfg.order[i] for i in perm) if cfg.shuffle_order else tuple(cfg.order)
    omitted = {op for op, u in zip(FIRST_OPS, drop) if u < cfg.p_omit[op]}
    applied = {"blur": blur, "resize1": resize1, "noise": noise, "jpeg": jpeg}
    return DegradationParams(
        order=tuple(op for op in first if op not in omitted) + ("resize2",),
        **{op: (None if op in omitted else value) for op, value in applied.items()},
        resize2=resize2,
    )


def check_hr(hr: Any, scale: int) -> np.ndarray:
    """Raise an ImageError unless `hr` is an H x W x 3 uint8 array of at least scale x scale."""
    if not isinstance(hr, np.ndarray):
        raise ImageError(f"expected an H x W x 3 uint8 numpy array, got {type(hr).__name__}")
    if hr.ndim != 3 or hr.shape[2] != 3 or hr.dtype != np.uint8:
        hint = " (convert gray, RGBA and 16-bit images with sr_degrade.imageio.to_rgb8)"
        raise ImageError(f"expected an H x W x 3 uint8 RGB array, got shape {hr.shape} dtype {hr.dtype}{hint}")
    if hr.shape[0] < scale or hr.shape[1] < scale:
        raise ImageError(f"image of {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}: no LR pixel")
    return hr


def crop_to_scale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The top-left (H // scale * scale) x (W // scale * scale) region: the HR that the LR matches."""
    h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    return hr[:h, :w]


def degrade(hr: np.ndarray, params: DegradationParams) -> np.ndarray:
    """Apply `params` to an HR image (H x W x 3 uint8 RGB) and return the LR image (uint8).

    The LR is exactly (H // scale) x (W // scale). When H or W is not a multiple of the scale, the
    HR is first cropped to its top-left multiple (`crop_to_scale`), so LR pixel (i, j) always
    covers HR pixels [scale*i, scale*(i+1)) x [scale*j, scale*(j+1)) of that crop; pair the LR with
    `crop_to_scale(hr, scale)`. Values travel as float32 in [0, 1], clipped after blur, each
    resize and noise, and are rounded to 8 bits at the JPEG encoder and at the output.
    """
    s = params.scale
    hr = crop_to_scale(check_hr(hr, s), s)
    out_h, out_w = hr.shape[0] // s, hr.shape[1] // s
    img = ops.to_float(hr)
    for op in params.order:
        if op == "blur":
            img = ops.clip01(ops.blur(img, params.blur.kernel()))
        elif op == "resize1":
            if not params.resize1.kept:
                img = ops.clip01(ops.resize_by(img, params.resize1.factor, params.resize1.mode))
        elif op == "noise":
            rng = np.random.default_rng(params.noise.seed)
            if params.noise.kind == "gaussian":
                img = ops.add_gaussian_noise(img, params.noise.level, params.noise.gray, rng)
            else:
                img = ops.add_poisson_noise(img, params.noise.level, params.noise.gray, rng)
        elif op == "jpeg":
            img = ops.jpeg(img, params.jpeg.quality)
        elif op == "resize2":
            img = ops.clip01(ops.resize_to(img, out_h, out_w, params.resize2.mode))
    return ops.to_uint8(img)
