"""The diffusion of PromptSR (paper 3.2, Eq. 1; DESIGN.md section 6): schedule, loss and sampling.

Images live in [-1, 1]. Training noises the HR image to a random timestep t ~ U{0, ..., T-1} per
sample (T = 2000, linear betas 1e-6 -> 1e-2, from the SR3 lineage the authors build on) and regresses
the noise: L = E || eps - eps_theta([y_t, up(x)], t, tau(c)) ||^2, where up(x) is the bicubic-upsampled
LR image concatenated on the channels and tau(c) the frozen text embeddings. Sampling runs any
diffusers scheduler (DDIM, 50 steps, eta 0 by default) from noise drawn with an explicit
torch.Generator. The schedule maths are diffusers'; this module only wires them to our model.

What the network predicts, and of what (`DiffusionConfig.prediction` and `.target`; the paper's is
epsilon / image). `prediction` is diffusers' prediction_type, so every scheduler converts the output
itself: "epsilon" (the noise), "sample" (x0) or "v_prediction" (v = sqrt(a_t) eps - sqrt(1 - a_t) x0).
With target "residual" the diffused quantity is HR - up(x) (SRDiff's), the conditioning is unchanged,
and sampling adds up(x) back. An epsilon model's x0 estimate near t = T is (x_t - sqrt(1 - a_t) eps) /
sqrt(a_t), its error multiplied by 1 / sqrt(a_t) ~ 150; x0 and v models have no such factor, which is
why they restore far more from pure noise at a small budget (README, "What the network predicts").
`snr_gamma` weights the loss by min-SNR-gamma (Hang et al. 2023); `zero_terminal_snr` rescales the
schedule to end at SNR 0 (Lin et al. 2024).

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

from .diffusion_config import (  # noqa: F401 - re-exported: promptsr.diffusion is where users find them
    CLIP_MODES,
    DEFAULT_CLIP,
    PREDICTIONS,
    TARGETS,
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


def diffused(hr: torch.Tensor, cond: torch.Tensor, target: str = "image") -> torch.Tensor:
    """What is diffused (DiffusionConfig.target): the HR image, or its residual over the bicubic `cond`."""
    return hr - cond if target == "residual" else hr


def wanted_output(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the network should output for x0 noised with `noise` at `timesteps`, by the scheduler's
    prediction_type: the noise, x0 itself, or v = sqrt(a_t) noise - sqrt(1 - a_t) x0."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    raise ValueError(f"unknown prediction_type {kind!r}")


def snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) of each timestep's output MSE, so that every prediction
    type weights the x0 error by min(SNR, gamma): epsilon min(SNR, g) / SNR, v min(SNR, g) / (SNR + 1),
    sample min(SNR, g). (B,) float32."""
    a = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].double()
    snr = a / (1 - a).clamp_min(1e-20)
    clipped = snr.clamp(max=gamma)
    kind = scheduler.config.prediction_type
    w = clipped / snr if kind == "epsilon" else clipped / (snr + 1) if kind == "v_prediction" else clipped
    return w.float()


def diffusion_losses(
    model: Callable,
    hr: torch.Tensor,
    cond: torch.Tensor,
    emb: torch.Tensor,
    mask: torch.Tensor | None,
    scheduler,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    target: str = "image",
) -> torch.Tensor:
    """Per-sample MSE (B,) between the network's output and what it should predict (`wanted_output`),
    the diffused quantity (`diffused`: image or residual) noised with `noise` at `timesteps`."""
    x0 = diffused(hr, cond, target)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    pred = model(noisy, timesteps, emb, mask, condition=cond)
    return (pred.float() - wanted_output(scheduler, x0, noise, timesteps).float()).pow(2).mean(dim=(1, 2, 3))


def diffusion_loss(
    model: Callable,
    hr: torch.Tensor,
    cond: torch.Tensor,
    emb: torch.Tensor,
    mask: torch.Tensor | None,
    scheduler,
    generator: torch.Generator | None = None,
    timesteps: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    *,
    target: str = "image",
    snr_gamma: float = 0.0,
) -> torch.Tensor:
    """The training loss, a timestep per sample: Eq. 1 (the noise's MSE) for an epsilon model on the image;
    for another prediction (the scheduler's prediction_type) or target, the MSE of that output; with
    `snr_gamma` > 0 each sample is weighted by `snr_weights`.

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
    losses = diffusion_losses(model, hr, cond, emb, mask, scheduler, timesteps, noise, target)
    if snr_gamma > 0:
        losses = losses * snr_weights(scheduler, timesteps, snr_gamma)
    return losses.mean()


#: The paper's name for the loss (Eq. 1), kept for code written against it.
epsilon_loss = diffusion_loss


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


def clipped_output(
    out: torch.Tensor, x_t: torch.Tensor, alpha_bar: float, prediction: str = "epsilon", bound: float = 1.0
) -> torch.Tensor:
    """The model output recomputed from the x0 estimate clamped to [-bound, bound] ("recompute" clipping,
    module doc), in the same `prediction` type: where nothing is clamped it is `out` exactly.

    out, x_t: (B, C, H, W) float32; x_t is the model's (variance-preserving) input at a_t = alpha_bar.
    Neither is modified; at most two image-sized temporaries live at once (the sampler's state may be
    a large image on the host).
    """
    a, s = alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5
    if prediction == "epsilon":
        x0 = torch.mul(out, s).neg_().add_(x_t).div_(a)  # (x_t - s eps) / a, the same roundings
    elif prediction == "v_prediction":
        x0 = torch.mul(out, s).neg_().add_(x_t, alpha=a)  # a x_t - s v
    else:
        x0 = out.clone()
    delta = x0.sub_(x0.clamp(-bound, bound))  # x0 - clamp(x0): what clipping removes
    if prediction == "epsilon":
        return delta.mul_(a / s).add_(out)  # eps' = eps + a (x0 - clamp(x0)) / s
    if prediction == "v_prediction":
        return delta.div_(s).add_(out)  # v' = v + (x0 - clamp(x0)) / s
    return delta.neg_().add_(out)  # x0' = clamp(x0)


def _x0_of(scheduler, out) -> torch.Tensor | None:
    """The x0 estimate the scheduler used in its last step: DDIM, DDPM and Euler return it;
    the multistep solvers (DPM-Solver++, UniPC) keep it as their latest model output."""
    x0 = getattr(out, "pred_original_sample", None)
    if x0 is None and getattr(scheduler, "model_outputs", None):
        x0 = scheduler.model_outputs[-1]
    return x0


#: The sampler's view of the model: denoise(x_t, t) -> output. x_t: (B, 3, H, W) float32, the scheduler's
#: scaled sample (of the image or of its residual: the target); t: (B,) long tensor of timesteps on x_t's
#: device. Returns the model's output in the scheduler's prediction_type (the noise, x0 or v), any float
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
    target: str = "image",
) -> torch.Tensor:
    """Reverse diffusion from Gaussian noise to an HR image in [-1, 1], conditioned on `cond`.

    `model(x_t, t, emb, mask, condition=cond)` is the denoiser, called on the whole batch (the network
    concatenates `cond`); `x_t` is cast to `cond`'s dtype. Everything else is `sample_with`'s (the options are its).
    """

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x_t.to(cond.dtype), t, emb, mask, condition=cond)

    return sample_with(
        denoise, cond.shape, scheduler, steps, start=cond, device=cond.device, generator=generator, noise=noise,
        eta=eta, callback=callback, clip=clip, x0_callback=x0_callback, strength=strength, target=target,
    )  # fmt: skip


@torch.no_grad()
def _clipping(scheduler, clip: str, bound: float):
    """(the scheduler to sample with, whether to clip by recomputing the model's output). Only DDIM keeps
    the predicted noise apart from x0 (module doc): there "clamp" is its own clip_sample option; every
    other scheduler and variant clips by recomputing the model's output."""
    from diffusers import DDIMScheduler

    check_clip(clip)
    if clip == "clamp" and isinstance(scheduler, DDIMScheduler):
        scheduler = reconfigured(scheduler, clip_sample=True, clip_sample_range=bound)
    recompute = clip != "none" and not (scheduler.config.get("clip_sample") or scheduler.config.get("thresholding"))
    return scheduler, recompute


def _start_state(scheduler, steps, shape, strength, start, noise, generator, device, residual):
    """The initial state x (float32 on `device`) and the timesteps to run: pure noise scaled to the
    scheduler's first sigma, or at strength < 1 the origin (the conditioning, or the zero residual)
    noised to the first timestep run."""
    scheduler.set_timesteps(steps)
    x = noise if noise is not None else torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    x = x.to(device, torch.float32)
    timesteps = scheduler.timesteps
    if strength < 1.0:
        begin = (steps - steps_run(steps, strength)) * scheduler.order
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        origin = torch.zeros_like(x) if residual else start.to(device, torch.float32)
        x = scheduler.add_noise(origin, x, timesteps[:1])
        del origin
    elif scheduler.init_noise_sigma != 1.0:  # x * 1.0 would only copy the image
        x = x * scheduler.init_noise_sigma
    return x, timesteps


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
    target: str = "image",
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

    `target` (DiffusionConfig.target): "image" diffuses the image itself; "residual" diffuses the image
    minus `start` (the bicubic conditioning, then required): x0 estimates are clipped to the residual's
    range [-2, 2], strength < 1 starts from the zero residual (the bicubic image) noised, and the result
    is `start` plus the sampled residual. What `denoise` returns is the scheduler's prediction_type.
    """
    import inspect

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    residual = target == "residual"
    bound = 2.0 if residual else 1.0  # the x0 estimate's own range (DiffusionConfig.clip_range)
    scheduler, recompute = _clipping(scheduler, clip, bound)
    prediction = scheduler.config.prediction_type
    alphas = scheduler.alphas_cumprod.double().numpy()  # read once, not at every step
    check_strength(strength)
    if (strength < 1.0 or residual) and start is None:
        raise ValueError(f"{'a residual target' if residual else 'strength < 1'} needs the conditioning as `start`")
    device = torch.device(device) if device is not None else torch.device("cpu")
    x, timesteps = _start_state(scheduler, steps, shape, strength, start, noise, generator, device, residual)
    params = inspect.signature(scheduler.step).parameters
    step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}
    for i, t in enumerate(timesteps):
        x_t = scheduler.scale_model_input(x, t)
        # A tensor, never a Python number: a compiled model would specialise on (recompile for) each value.
        t_batch = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        eps = denoise(x_t, t_batch).float()  # the model's output: the noise, x0 or v (prediction)
        if recompute:
            eps = clipped_output(eps, x_t, _alpha_bar(alphas, t), prediction, bound)
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
    if residual:
        x.add_(start.to(device, torch.float32))
    return x.clamp_(-1.0, 1.0)  # x is the scheduler's fresh output: clamped in place, no extra copy
