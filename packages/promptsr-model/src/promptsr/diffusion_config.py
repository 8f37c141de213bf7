"""The diffusion settings as plain data (no torch import): the schedule, the clip variants and the
strength rule, so that configs and command lines can be checked before torch loads.
`promptsr.diffusion` re-exports everything here and documents what the settings mean."""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: How sampling clips the x0 estimate (module doc); the first is the default.
#: "clamp" measured 0.9 dB (300-step demo model, both held-out photos) and 2.2 dB (1200-step model,
#: coffee) above "recompute" with DDIM, the default sampler (README, Diffusion).
CLIP_MODES = {
    "clamp": "clamp x0 to [-1, 1], keep the predicted noise (diffusers' DDIM clip_sample)",
    "recompute": "clamp x0 to [-1, 1] and recompute the noise from it (guided-diffusion)",
    "none": "no clipping",
}
DEFAULT_CLIP = "clamp"


def check_clip(mode: str) -> str:
    """`mode` if it is a known clip variant, else a ValueError naming the known ones."""
    if mode not in CLIP_MODES:
        known = "; ".join(f"{k} ({v})" for k, v in CLIP_MODES.items())
        raise ValueError(f"unknown clip variant {mode!r}: use one of {known}")
    return mode


def check_strength(strength: float) -> float:
    """`strength` if it is in (0, 1], else a ValueError saying what it means (see `sample`)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength {strength} must be in (0, 1]: 1 starts from pure noise (the paper's sampling)")
    return strength


def steps_run(steps: int, strength: float) -> int:
    """How many of `steps` sampling steps a run at `strength` takes: the last round(strength x steps), >= 1."""
    return max(1, min(steps, round(steps * strength)))


@dataclass(frozen=True)
class DiffusionConfig:
    num_train_timesteps: int = 2000  #: T (paper)
    beta_start: float = 1e-6  #: linear schedule start (ours, SR3 lineage)
    beta_end: float = 1e-2  #: linear schedule end
    beta_schedule: str = "linear"
    clip: str = DEFAULT_CLIP  #: how sampling clips the x0 estimate: clamp, recompute or none (CLIP_MODES)

    def __post_init__(self) -> None:
        try:
            check_clip(self.clip)
        except ValueError as e:
            from sr_degrade.errors import ConfigError

            raise ConfigError(f"config field 'diffusion.clip': {e}") from None

    def scheduler_kwargs(self) -> dict:
        schedule = {k: v for k, v in asdict(self).items() if k != "clip"}
        return {**schedule, "prediction_type": "epsilon", "clip_sample": False}
