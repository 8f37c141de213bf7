"""The diffusion of PromptSR (paper 3.2, Eq. 1; DESIGN.md section 6): schedule, loss and sampling.

Images live in [-1, 1]. Training noises the HR image to a random timestep t ~ U{0, ..., T-1} per
sample (T = 2000, linear betas 1e-6 -> 1e-2, from the SR3 lineage the authors build on) and regresses
the noise: L = E || eps - eps_theta([y_t, up(x)], t, tau(c)) ||^2, where up(x) is the bicubic-upsampled
LR image concatenated on the channels and tau(c) the frozen text embeddings. Sampling runs any
diffusers scheduler (DDIM, 50 steps, eta 0 by default) from noise drawn with an explicit
torch.Generator. The schedule maths are diffusers'; this module only wires them to our model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

#: Short scheduler names accepted besides diffusers class names.
SCHEDULER_ALIASES = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "dpmsolver++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


@dataclass(frozen=True)
class DiffusionConfig:
    num_train_timesteps: int = 2000  #: T (paper)
    beta_start: float = 1e-6  #: linear schedule start (ours, SR3 lineage)
    beta_end: float = 1e-2  #: linear schedule end
    beta_schedule: str = "linear"

    def scheduler_kwargs(self) -> dict:
        return {**asdict(self), "prediction_type": "epsilon", "clip_sample": False}


def train_scheduler(cfg: DiffusionConfig):
    """The forward process (add_noise) as a diffusers DDPMScheduler."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**cfg.scheduler_kwargs())


def sampling_scheduler(name: str, cfg: DiffusionConfig):
    """A diffusers scheduler by alias ("ddim", "dpm-solver++", ...) or class name, on our schedule."""
    import diffusers

    cls_name = SCHEDULER_ALIASES.get(name.lower(), name)
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "set_timesteps"):
        raise ValueError(
            f"unknown scheduler {name!r}: use one of {sorted(SCHEDULER_ALIASES)} or a diffusers class name"
        )
    kwargs = cfg.scheduler_kwargs()
    if cls_name == "DDIMScheduler":
        kwargs["set_alpha_to_one"] = True  # the last step lands on the clean image
    if cls_name == "DPMSolverMultistepScheduler":
        kwargs["algorithm_type"] = "dpmsolver++"
    return cls.from_config(kwargs)


def epsilon_loss(
    model: Callable,
    hr: torch.Tensor,
    cond: torch.Tensor,
    emb: torch.Tensor,
    mask: torch.Tensor | None,
    scheduler,
    generator: torch.Generator | None = None,
    timesteps: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 1: MSE between the noise and its prediction, a timestep per sample.

    hr, cond: (B, 3, H, W) in [-1, 1] (cond = bicubic-upsampled LR); emb (B, L, D); mask (B, L) bool.
    `timesteps` and `noise` may be fixed (e.g. to track the loss on a fixed batch).
    """
    b = hr.shape[0]
    # Drawn where the generator lives: an explicit (CPU) generator for reproducible draws, else the
    # device's own RNG (no host-to-device copy of a noise tensor every step on a GPU).
    where = generator.device if generator is not None else hr.device
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator, device=where)
    if noise is None:
        noise = torch.randn(hr.shape, generator=generator, device=where, dtype=hr.dtype)
    timesteps, noise = timesteps.to(hr.device), noise.to(hr.device)
    noisy = scheduler.add_noise(hr, noise, timesteps)
    pred = model(torch.cat([noisy, cond], dim=1), timesteps, emb, mask)
    return F.mse_loss(pred.float(), noise.float())


@torch.no_grad()
def sample(
    model: Callable,
    cond: torch.Tensor,
    emb: torch.Tensor,
    mask: torch.Tensor | None,
    scheduler,
    steps: int = 50,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    eta: float = 0.0,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Reverse diffusion from Gaussian noise to an HR image in [-1, 1], conditioned on `cond`.

    The initial noise is drawn on the CPU from `generator` (so CPU and GPU runs start alike) unless
    given. `eta` only applies to DDIM (0 = deterministic, the paper's setting). The trajectory stays
    in float32 whatever the model's dtype; only the model's input is cast to `cond`'s dtype.
    """
    import inspect

    scheduler.set_timesteps(steps)
    x = noise if noise is not None else torch.randn(cond.shape, generator=generator, dtype=torch.float32)
    x = x.to(cond.device, torch.float32) * scheduler.init_noise_sigma
    step_kwargs = {}
    params = inspect.signature(scheduler.step).parameters
    if "eta" in params:
        step_kwargs["eta"] = eta
    if "generator" in params:
        step_kwargs["generator"] = generator
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(x, t).to(cond.dtype)
        t_batch = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        eps = model(torch.cat([model_in, cond], dim=1), t_batch, emb, mask)
        x = scheduler.step(eps.float(), t, x, **step_kwargs).prev_sample
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x.clamp(-1.0, 1.0)
