"""The diffusion of PromptSR (paper 3.2, Eq. 1; DESIGN.md section 6): schedule, loss and sampling.

Images live in [-1, 1]. Training noises the HR image to a random timestep t ~ U{0, ..., T-1} per
sample (T = 2000, linear betas 1e-6 -> 1e-2, from the SR3 lineage the authors build on) and regresses
the noise: L = E || eps - eps_theta([y_t, up(x)], t, tau(c)) ||^2, where up(x) is the bicubic-upsampled
LR image concatenated on the channels and tau(c) the frozen text embeddings. Sampling runs any
diffusers scheduler (DDIM, 50 steps, eta 0 by default) from noise drawn with an explicit
torch.Generator. The schedule maths are diffusers'; this module only wires them to our model.

Clipping (ours, as pixel-space diffusion has done since DDPM). At every step the sampler's estimate of
the clean image, x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), is clamped to [-1, 1]. Unclipped, an
early error in eps is divided by sqrt(a_t) ~ 0.007 near t = T and the trajectory explodes into
coloured noise. Two variants (`CLIP_MODES`; "clamp" is the default, measured the better with DDIM):

- "recompute" (guided-diffusion's `clip_denoised`): clamp x0, then recompute the noise estimate from
  the clamped x0, eps' = eps + sqrt(a_t) (x0 - clamp(x0)) / sqrt(1 - a_t), and hand eps' to the
  scheduler. Every scheduler (any diffusers class on an epsilon model) then works on the clamped x0;
  where nothing is clamped eps' is eps exactly.
- "clamp" (diffusers' DDIM `clip_sample`): clamp x0 but keep the predicted noise for DDIM's
  direction term. Only DDIM uses the noise beyond x0; DDPM, DPM-Solver++, UniPC and Euler derive
  their update from x0 alone, so for them "clamp" is the same as "recompute" and runs that way
  (diffusers' `thresholding` with sample_max_value=1 would be the same static clamp, but it computes
  a torch.quantile over the whole image, which refuses more than 2^24 values: an RGB output above
  about 2360 x 2360).
- "none": no clipping (for ablations).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .diffusion_config import (  # noqa: F401 - re-exported: promptsr.diffusion is where users find them
    CLIP_MODES,
    DEFAULT_CLIP,
    DiffusionConfig,
    check_clip,
    check_strength,
    steps_run,
)

#: Short scheduler names accepted besides diffusers class names.
SCHEDULER_ALIASES = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "dpmsolver++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


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


def reconfigured(scheduler, **changes):
    """A new scheduler of the same class with some config values changed. (diffusers' from_config
    resets every key listed in `_use_default_values` to its default, even when `changes` sets it.)"""
    config = {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}
    return type(scheduler).from_config({**config, **changes})


def _alpha_bar(a: np.ndarray, t: torch.Tensor) -> float:
    """a_t of the training schedule `a` (alphas_cumprod) at a (possibly fractional) timestep: exact at
    integer t; between integers, through the noise level sigma = sqrt((1 - a) / a) interpolated
    linearly, as the sigma-based (Euler-type) schedulers place their fractional timesteps."""
    tf = float(t)
    if tf == int(tf):
        return float(a[int(tf)])
    sigma = np.interp(tf, np.arange(len(a)), ((1 - a) / a) ** 0.5)
    return float(1.0 / (1.0 + sigma**2))


def clipped_noise(eps: torch.Tensor, x_t: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The noise estimate recomputed from the clamped x0 ("recompute" clipping, module doc).

    eps, x_t: (B, C, H, W) float32; x_t is the model's (variance-preserving) input at a_t = alpha_bar.
    Neither is modified; at most two image-sized temporaries live at once (the sampler's state may be
    a large image on the host).
    """
    a, s = alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5
    x0 = torch.mul(eps, s).neg_().add_(x_t).div_(a)  # (x_t - s eps) / a, the same roundings
    x0.sub_(x0.clamp(-1.0, 1.0)).mul_(a / s)
    return x0.add_(eps)


def _x0_of(scheduler, out) -> torch.Tensor | None:
    """The x0 estimate the scheduler used in its last step: DDIM, DDPM and Euler return it;
    the multistep solvers (DPM-Solver++, UniPC) keep it as their latest model output."""
    x0 = getattr(out, "pred_original_sample", None)
    if x0 is None and getattr(scheduler, "model_outputs", None):
        x0 = scheduler.model_outputs[-1]
    return x0


#: The sampler's view of the model: denoise(x_t, t) -> eps. x_t: (B, 3, H, W) float32, the scheduler's
#: scaled sample; t: (B,) long tensor of timesteps on x_t's device. Returns the predicted noise, any float
#: dtype, on x_t's device. It must not modify x_t.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    clip: str = DEFAULT_CLIP,
    x0_callback: Callable[[int, torch.Tensor], None] | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Reverse diffusion from Gaussian noise to an HR image in [-1, 1], conditioned on `cond`.

    `model(torch.cat([x_t, cond], 1), t, emb, mask)` is the denoiser, called on the whole batch; the
    model's input is cast to `cond`'s dtype. Everything else is `sample_with`'s (the options are its).
    """

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(torch.cat([x_t.to(cond.dtype), cond], dim=1), t, emb, mask)

    return sample_with(
        denoise, cond.shape, scheduler, steps, start=cond, device=cond.device, generator=generator, noise=noise,
        eta=eta, callback=callback, clip=clip, x0_callback=x0_callback, strength=strength,
    )  # fmt: skip


@torch.no_grad()
def sample_with(
    denoise: Denoiser,
    shape: tuple[int, ...] | torch.Size,
    scheduler,
    steps: int = 50,
    *,
    start: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    eta: float = 0.0,
    callback: Callable[[int, int], None] | None = None,
    clip: str = DEFAULT_CLIP,
    x0_callback: Callable[[int, torch.Tensor], None] | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Reverse diffusion of a `shape` (B, 3, H, W) image from Gaussian noise to [-1, 1] through `denoise`.

    The state (the float32 trajectory and the scheduler's temporaries, about six image copies at the
    peak of a step) lives on `device` (default: the CPU), whatever device `denoise` runs its model on:
    the tiled Upscaler keeps a large image on the host and moves only tiles to the GPU. The initial
    noise is drawn on the CPU from `generator` (so CPU and GPU runs start alike) unless given.
    `eta` only applies to DDIM (0 = deterministic, the paper's setting). `clip` is one of CLIP_MODES
    (module doc). `x0_callback(i, x0)` sees the x0 estimate the scheduler used at step i (1-based),
    e.g. to check clipping or to watch the image form; `callback(i, n)` is called after each step.

    `strength` in (0, 1]: 1 (the paper's sampling) starts from pure noise at t ~ T. Below 1 the
    reverse process starts from `start` (the conditioning) noised to t0 ~ strength x T and runs only
    the last round(strength x steps) steps (diffusers' img2img convention; for SR, Chung et al.'s
    "Come-Closer-Diffuse-Faster"): the low frequencies come from the conditioning, which a briefly
    trained model cannot yet restore from pure noise, and sampling is 1 / strength times faster.
    """
    import inspect

    from diffusers import DDIMScheduler

    check_clip(clip)
    # Only DDIM keeps the predicted noise apart from x0 (module doc): there "clamp" is its own
    # clip_sample option; every other scheduler and variant clips by recomputing the noise.
    if clip == "clamp" and isinstance(scheduler, DDIMScheduler):
        scheduler = reconfigured(scheduler, clip_sample=True, clip_sample_range=1.0)
    recompute = clip != "none" and not (scheduler.config.get("clip_sample") or scheduler.config.get("thresholding"))
    alphas = scheduler.alphas_cumprod.double().numpy()  # read once, not at every step
    check_strength(strength)
    if strength < 1.0 and start is None:
        raise ValueError("strength < 1 starts from the conditioning: pass it as `start`")
    device = torch.device(device) if device is not None else torch.device("cpu")
    scheduler.set_timesteps(steps)
    x = noise if noise is not None else torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    x = x.to(device, torch.float32)
    timesteps = scheduler.timesteps
    if strength < 1.0:
        begin = (steps - steps_run(steps, strength)) * scheduler.order
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        x = scheduler.add_noise(start.to(device, torch.float32), x, timesteps[:1])
    elif scheduler.init_noise_sigma != 1.0:  # x * 1.0 would only copy the image
        x = x * scheduler.init_noise_sigma
    step_kwargs = {}
    params = inspect.signature(scheduler.step).parameters
    if "eta" in params:
        step_kwargs["eta"] = eta
    if "generator" in params:
        step_kwargs["generator"] = generator
    for i, t in enumerate(timesteps):
        x_t = scheduler.scale_model_input(x, t)
        # A tensor, never a Python number: a compiled model would specialise on (recompile for) each value.
        t_batch = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        eps = denoise(x_t, t_batch).float()
        if recompute:
            eps = clipped_noise(eps, x_t, _alpha_bar(alphas, t))
        del x_t  # image-sized when the scheduler scales its input (Euler)
        out = scheduler.step(eps, t, x, **step_kwargs)
        del eps  # not kept through the next step's denoising: it would be one more image copy
        x = out.prev_sample
        if x0_callback is not None:
            x0 = _x0_of(scheduler, out)
            if x0 is not None:
                x0_callback(i + 1, x0)
        del out
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x.clamp_(-1.0, 1.0)  # x is the scheduler's fresh output: clamped in place, no extra copy
