"""One optimisation step of PromptSR, and the speed settings it runs with.

    step = TrainStep(accelerator, model, optimizer, train_scheduler(cfg.diffusion), grad_clip=1.0, speed=speed,
                     diffusion=cfg.diffusion)
    loss, ok = step(batch)          # forward, backward, clip, Adam; skipped on every rank when non-finite

The trainer's loop and bench/train.py both call this object, so a benchmark figure is a figure of
`accelerate launch packages/promptsr-model/train.py`.

Speed settings (`resolve_speed`), each "auto" (on for a CUDA device, off on the CPU), true or false:
TF32 matmuls and convolutions with cudnn.benchmark; channels_last (NHWC) weights and inputs; torch's
fused Adam; torch.compile of the training forward. Asking for one that the machine cannot use falls
back with one notice on stderr, never a crash: TF32 off a GPU, fused Adam where torch has no fused
kernel, a compile backend that is missing or fails on the first step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .diffusion import DiffusionConfig, diffusion_loss
from .speed import compile_backend, enable_tf32, notice, wanted
from .train_data import Batch


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's on a GPU, the process's max RSS on a CPU (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux


@dataclass(frozen=True)
class Speed:
    """The speed settings a run actually uses (after "auto" and fallbacks)."""

    tf32: bool = False
    channels_last: bool = False
    fused_adam: bool = False
    compile: str | None = None  #: a torch.compile backend, or None for eager

    def describe(self) -> str:
        on = [n for n in ("tf32", "channels_last", "fused_adam") if getattr(self, n)]
        on += [f"compile ({self.compile if isinstance(self.compile, str) else 'custom'})"] if self.compile else []
        return "speed settings: " + (", ".join(on) if on else "none")


def resolve_speed(run: Any, device: torch.device) -> Speed:
    """`run.tf32`, `run.channels_last`, `run.fused_adam` and `run.compile` resolved for `device`,
    with one notice for each that was asked for and cannot be used here. Sets the TF32 flags."""
    cuda = device.type == "cuda"
    tf32 = enable_tf32(wanted(run.tf32, cuda), device, "run.tf32")
    if cuda:  # crops are one size: cuDNN's algorithm search is paid once
        torch.backends.cudnn.benchmark = True
    fused = wanted(run.fused_adam, cuda)
    if fused and not _has_fused_adam(device):
        notice(f"run.fused_adam: torch {torch.__version__} has no fused Adam on {device.type}; using the default Adam")
        fused = False
    backend = compile_backend(cuda if run.compile == "auto" else run.compile)
    return Speed(tf32=tf32, channels_last=wanted(run.channels_last, cuda), fused_adam=fused, compile=backend)


def _has_fused_adam(device: torch.device) -> bool:
    try:
        probe = torch.zeros(1, device=device, requires_grad=True)
        torch.optim.Adam([probe], fused=True).step()
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def make_optimizer(params, optim: Any, speed: Speed) -> torch.optim.Optimizer:
    """Adam as the paper trains (betas 0.9, 0.99), fused when `speed` says so."""
    kwargs = {"fused": True} if speed.fused_adam else {}
    return torch.optim.Adam(params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay, **kwargs)


class TrainStep:
    """Forward, backward, gradient clipping and the optimizer step for one (micro-)batch, under
    Accelerate's gradient accumulation and autocast.

    A micro-batch whose loss is not finite on any rank is skipped on every rank (so DDP stays in
    step): its gradients are not applied and the gradients accumulated so far in its accumulation
    window are discarded (zero_grad), so that window's optimizer step, when it comes, uses only the
    micro-batches after the bad one. `__call__` returns (loss, applied).
    """

    def __init__(
        self,
        accelerator: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        noise_scheduler: Any,
        grad_clip: float = 0.0,
        speed: Speed = Speed(),
        diffusion: DiffusionConfig | None = None,
    ):
        # `diffusion` gives the target and the loss weighting; `noise_scheduler` (train_scheduler of the same
        # config) the schedule and the prediction type.
        self.diffusion = diffusion if diffusion is not None else DiffusionConfig()
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer
        self.noise_scheduler, self.grad_clip, self.speed = noise_scheduler, grad_clip, speed
        self.forward: Callable = model
        if speed.compile:
            self.forward = torch.compile(model, backend=speed.compile)
        self._checked_compile = not speed.compile

    def _loss(self, batch: Batch) -> torch.Tensor:
        def denoiser(x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor | None, condition):
            if self.speed.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                condition = condition.contiguous(memory_format=torch.channels_last)
            return self.forward(x, t, emb, mask, condition=condition)

        with self.accelerator.autocast():
            return diffusion_loss(
                denoiser, *batch, self.noise_scheduler, target=self.diffusion.target, snr_gamma=self.diffusion.snr_gamma
            )

    def loss(self, batch: Batch) -> torch.Tensor:
        """The loss of `batch` under the step's settings; the first call checks that compilation
        works and falls back to eager (one notice) when it does not."""
        if self._checked_compile:
            return self._loss(batch)
        self._checked_compile = True
        try:
            return self._loss(batch)
        except Exception as e:
            notice(
                f"torch.compile ({self.speed.compile}) failed on the first step ({type(e).__name__}); running eagerly"
            )
            self.forward = self.model
            self.optimizer.zero_grad(set_to_none=True)
            return self._loss(batch)

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, bool]:
        acc = self.accelerator
        with acc.accumulate(self.model):
            loss = self.loss(batch)
            bad = acc.reduce((~torch.isfinite(loss.detach())).float(), "sum")  # one host sync a step
            if bad > 0:
                self.optimizer.zero_grad(set_to_none=True)
                return loss.detach(), False
            acc.backward(loss)
            if acc.sync_gradients and self.grad_clip > 0:
                acc.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), True
