"""The diffusion settings as plain data (no torch import): the schedule, what the network predicts and
of what, the loss weighting, the clip variants and the strength rule, so that configs and command lines
can be checked before torch loads.
`promptsr.diffusion` re-exports everything here and documents what the settings mean."""

from __future__ import annotations

from dataclasses import dataclass

#: How sampling clips the x0 estimate (module doc); the first is the default.
#: "clamp" measured 0.9 dB (300-step demo model, both held-out photos) and 2.2 dB (1200-step model,
#: coffee) above "recompute" with DDIM, the default sampler (README, Diffusion).
CLIP_MODES = {
    "clamp": "clamp x0 to [-1, 1], keep the predicted noise (diffusers' DDIM clip_sample)",
    "recompute": "clamp x0 to [-1, 1] and recompute the noise from it (guided-diffusion)",
    "none": "no clipping",
}
DEFAULT_CLIP = "clamp"


#: What the network predicts (diffusers' prediction_type); the first is the paper's (Eq. 1).
PREDICTIONS = {
    "epsilon": "the noise (the paper's Eq. 1)",
    "sample": "the clean target x0 itself",
    "v_prediction": "v = sqrt(a_t) eps - sqrt(1 - a_t) x0 (Salimans and Ho)",
}
#: What is diffused; the first is the paper's.
TARGETS = {
    "image": "the HR image (the paper's)",
    "residual": "the HR image minus the bicubic-upsampled LR (SRDiff); sampling adds the bicubic image back",
}


#: diffusers' timestep spacings (DiffusionConfig.timestep_spacing).
SPACINGS = ("leading", "trailing", "linspace")


def _choice(field: str, value: object, known: dict[str, str]) -> None:
    if value not in known:
        listed = "; ".join(f"{k} ({v})" for k, v in known.items())
        raise ValueError(f"unknown {field} {value!r}: use one of {listed}")


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
    prediction: str = "epsilon"  #: what the network predicts (PREDICTIONS); epsilon is the paper's
    target: str = "image"  #: what is diffused (TARGETS): the HR image (the paper's) or its residual over bicubic
    #: Min-SNR-gamma loss weighting (Hang et al. 2023): each timestep's loss is weighted so that it counts as
    #: an x0 loss weighted min(SNR, gamma); 0 is off (Eq. 1's plain mean).
    snr_gamma: float = 0.0
    #: diffusers' rescale_betas_zero_snr (Lin et al. 2024): the schedule ends at SNR 0, so sampling from pure
    #: noise is what training saw at t = T; sampling then starts at t = T - 1 ("trailing" steps). Needs a
    #: prediction that stays defined at SNR 0 (sample or v_prediction).
    zero_terminal_snr: bool = False
    #: Where sampling places its steps (diffusers' timestep_spacing): None keeps each scheduler's own default
    #: (DDIM "leading": 50 steps run t = 1960 ... 0, and 1 step runs t = 0 alone); "trailing" ends at t = T - 1
    #: whatever the step count, which few-step sampling from pure noise needs; "linspace".
    timestep_spacing: str | None = None

    def __post_init__(self) -> None:
        from sr_degrade.errors import ConfigError

        try:
            check_clip(self.clip)
        except ValueError as e:
            raise ConfigError(f"config field 'diffusion.clip': {e}") from None
        for name, known in (("prediction", PREDICTIONS), ("target", TARGETS)):
            try:
                _choice(name, getattr(self, name), known)
            except ValueError as e:
                raise ConfigError(f"config field 'diffusion.{name}': {e}") from None
        if isinstance(self.snr_gamma, bool) or not isinstance(self.snr_gamma, (int, float)) or self.snr_gamma < 0:
            raise ConfigError(f"config field 'diffusion.snr_gamma': {self.snr_gamma!r} must be a number >= 0 (0: off)")
        if not isinstance(self.zero_terminal_snr, bool):
            raise ConfigError(
                f"config field 'diffusion.zero_terminal_snr': {self.zero_terminal_snr!r} must be true/false"
            )
        if self.timestep_spacing not in (None, *SPACINGS):
            raise ConfigError(
                f"config field 'diffusion.timestep_spacing': {self.timestep_spacing!r} is not one of "
                f"{', '.join(SPACINGS)} (or null: each scheduler's default)"
            )
        if self.zero_terminal_snr and self.prediction == "epsilon":
            raise ConfigError(
                "config field 'diffusion.zero_terminal_snr': at SNR 0 the noise says nothing about the image; "
                "use it with diffusion.prediction=v_prediction or sample"
            )

    @property
    def clip_range(self) -> float:
        """The x0 estimate's own range, where sampling clips it: [-1, 1] for an image, [-2, 2] for a residual
        (the difference of two images in [-1, 1])."""
        return 2.0 if self.target == "residual" else 1.0

    def scheduler_kwargs(self) -> dict:
        schedule = {k: getattr(self, k) for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")}
        extra: dict = {"timestep_spacing": self.timestep_spacing} if self.timestep_spacing else {}
        if self.zero_terminal_snr:
            extra = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
        return {**schedule, "prediction_type": self.prediction, "clip_sample": False, **extra}
