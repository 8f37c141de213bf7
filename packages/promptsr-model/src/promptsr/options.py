"""The sampling options: one set of defaults and one check for everything that samples an image
(`promptsr upscale`, `eval`, `ablate`, the app, the benchmarks). Torch-free, so that the command line
refuses a bad value before torch loads.

    opts = SamplingOptions(steps=20, strength=1.0).check_inputs()   # ValueError naming the flag
    upscaler.check_settings(**opts.model_checks())                   # what depends on the model
    sr = upscaler.upscale(lr, prompt, **opts.upscale_kwargs())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .diffusion_config import check_clip, check_strength


@dataclass(frozen=True)
class SamplingOptions:
    """How an image is sampled (each field's command-line flag in its comment)."""

    steps: int = 50  #: --steps: sampling steps (a run at strength s takes the last round(s x steps))
    scheduler: str = "ddim"  #: --scheduler: ddim, dpm-solver++, euler, unipc or a diffusers class
    seed: int = 0  #: --seed: of the initial noise
    tile: int = 512  #: --tile: tile side in HR pixels (memory is bounded by it)
    overlap: int = 64  #: --overlap: of neighbouring tiles in HR pixels
    batch: int = 4  #: --batch: tiles per forward pass
    color: str = "none"  #: --color-fix: none, adain or wavelet
    clip: str | None = None  #: --clip: recompute, clamp or none; None: the model's setting
    strength: float = 1.0  #: --strength: 1 from pure noise (the paper's); below 1 from the noised bicubic

    def check_inputs(self, flag: str = "--") -> SamplingOptions:
        """Self, or a ValueError naming the option (`flag` + its name) for what no model can take; the
        checks that depend on the model (tile multiple, scheduler, colour fix) are `model_checks`."""
        if self.steps < 1:
            raise ValueError(f"{flag}steps {self.steps} must be at least 1")
        if self.tile < 1 or not 0 <= self.overlap < self.tile:
            raise ValueError(f"{flag}overlap {self.overlap} must be >= 0 and smaller than {flag}tile ({self.tile})")
        if self.batch < 1:
            raise ValueError(f"{flag}batch {self.batch} must be at least 1")
        if self.clip is not None:
            try:
                check_clip(self.clip)
            except ValueError as e:
                raise ValueError(f"{flag}clip: {e}") from None
        try:
            check_strength(self.strength)
        except ValueError as e:
            raise ValueError(f"{flag}{e}") from None
        return self

    def model_checks(self) -> dict:
        """The keyword arguments of `Upscaler.check_settings`."""
        names = ("tile", "overlap", "scheduler", "color", "clip", "strength")
        return {k: getattr(self, k) for k in names}

    def upscale_kwargs(self) -> dict:
        """The keyword arguments of `Upscaler.upscale` (and `upscale_tensor`)."""
        return asdict(self)


def clip_choice(clip: str | None, no_clip: bool) -> str | None:
    """--clip / --no-clip as one value (None: the model's); ValueError for a contradiction."""
    if no_clip and clip not in (None, "none"):
        raise ValueError(f"--no-clip contradicts --clip {clip}")
    return "none" if no_clip else clip
