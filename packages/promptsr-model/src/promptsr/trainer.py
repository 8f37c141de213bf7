"""The PromptSR trainer: Accelerate on one CPU, one GPU or many, streaming sr-degrade shards.

    accelerate launch packages/promptsr-model/train.py --config configs/promptsr_x4.yaml optim.lr=1e-4

This module is the loop; each piece it calls has one job:

- `promptsr.train_data`: the shards, prompts re-rendered per sample, stored or live embeddings, and
  the device batch (HR, bicubic-upsampled LR, embeddings, mask). Each rank takes
  batch_size / (ranks x grad_accum) samples a step from its own resampled stream.
- `promptsr.train_step`: one optimisation step (forward, backward, clipping, Adam) under Accelerate's
  accumulation and autocast, with the speed settings (TF32, channels_last, fused Adam, torch.compile).
  A step whose loss is NaN/inf on any rank is skipped on every rank, counted (`skipped_steps` in the
  logs), and after `max_bad_steps` in a row the run saves and stops with a message.
- `promptsr.checkpoint`: `save_state` every `checkpoint_every` steps into
  `output_dir/checkpoints/step_XXXXXXXX`, no pickles, the newest `keep_checkpoints` kept; a run that
  stops for any reason saves first; `resume: auto` continues from the latest. The data stream is
  re-seeded from (seed, step) on resume (see `TrainData.loader`).
- `promptsr.validation`: DDIM samples of a fixed held-out set every `val_every` steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from sr_degrade.progress import Progress

from .checkpoint import Checkpointer, TrainState, _digest
from .config import TrainConfig
from .diffusion import DiffusionConfig, diffusion_loss, train_scheduler
from .errors import TrainingError
from .train_data import Batch, TrainData
from .train_step import TrainStep, make_optimizer, peak_memory_gib, resolve_speed
from .validation import Validator

__all__ = ["TrainingError", "peak_memory_gib", "train"]


def build_model(cfg: TrainConfig, encoder_info: dict[str, Any]) -> torch.nn.Module:
    """The denoiser of `cfg.model`, its cross-attention as wide as the text encoder's embeddings and
    the encoder's id recorded in its config."""
    from .unet import build_unet

    text_dim = int(encoder_info["dim"])
    overrides = dict(cfg.model.overrides)
    if overrides.get("cross_attention_dim", text_dim) != text_dim:
        raise TrainingError(
            f"model.overrides.cross_attention_dim = {overrides['cross_attention_dim']} but the text encoder "
            f"{encoder_info['id']} gives {text_dim}-d embeddings"
        )
    overrides.update(cross_attention_dim=text_dim, text_encoder=encoder_info["id"])
    try:
        return build_unet(cfg.model.preset, **overrides)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    use_cpu = cfg.run.cpu or not torch.cuda.is_available()
    return Accelerator(
        cpu=use_cpu,
        mixed_precision=cfg.run.mixed_precision if not use_cpu or cfg.run.mixed_precision == "bf16" else "no",
        gradient_accumulation_steps=cfg.optim.grad_accum,
        log_with="tensorboard",
        project_dir=str(cfg.run.output_dir),
        step_scheduler_with_optimizer=False,  # stepped once per optimizer step, whatever the world size
    )


class FixedLoss:
    """The loss on one fixed batch, timesteps and noise: a training curve without sampling noise."""

    def __init__(self, batch: Batch, diffusion: DiffusionConfig):
        gen = torch.Generator().manual_seed(12345)
        num_train_timesteps, self.diffusion = diffusion.num_train_timesteps, diffusion
        b, device = batch.hr.shape[0], batch.hr.device
        self.batch = batch
        self.t = torch.randint(0, num_train_timesteps, (b,), generator=gen).to(device)
        self.noise = torch.randn(batch.hr.shape, generator=gen).to(device)

    @torch.no_grad()
    def __call__(self, accelerator, model, noise_scheduler) -> float:
        with accelerator.autocast():
            loss = diffusion_loss(
                model, *self.batch, noise_scheduler, timesteps=self.t, noise=self.noise,
                target=self.diffusion.target, snr_gamma=self.diffusion.snr_gamma,
            )  # fmt: skip
        return float(accelerator.reduce(loss.detach(), "mean"))


class MetricsLog:
    """The run's records: `metrics.jsonl` and the trackers (TensorBoard) on the main process, and the
    window of losses and samples since the last log line (mean loss over ranks, samples/s)."""

    def __init__(self, accelerator, path: Path):
        self.acc, self.path = accelerator, path
        self.losses: list[torch.Tensor] = []
        self.seen, self.start = 0, time.perf_counter()

    def __call__(self, step: int, record: dict[str, Any]) -> None:
        self.acc.log(record, step=step)
        if self.acc.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **record}) + "\n")

    def add(self, loss: torch.Tensor, samples: int) -> None:
        self.losses.append(loss)
        self.seen += samples

    def window(self) -> dict[str, float]:
        """Mean loss (over ranks) and samples/s since the last call."""
        record = {
            "loss": float(self.acc.reduce(torch.stack(self.losses).mean(), "mean")),
            "samples_per_s": self.seen / (time.perf_counter() - self.start),
        }
        self.losses, self.seen, self.start = [], 0, time.perf_counter()
        return record


def hold_output_dir(accelerator, out: Path) -> contextlib.ExitStack:
    """An operating-system lock on output_dir, held by the main process for the whole run (freed by
    the kernel when it dies, so a killed run resumes): a second run on the same output_dir stops at
    once, on every rank, with one line naming the holder's PID. Close the returned stack to release."""
    from sr_degrade.errors import LockError
    from sr_degrade.locks import exclusive

    stack, error = contextlib.ExitStack(), None
    if accelerator.is_main_process:
        try:
            stack.enter_context(exclusive(out / ".train.lock", f"the training run in {out}"))
        except LockError as e:
            error = str(e)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [error]
        broadcast_object_list(box)
        error = box[0]
    if error:
        raise TrainingError(error)
    return stack


def write_run_files(accelerator, cfg: TrainConfig, data: TrainData) -> None:
    """config.yaml (resolved), encoder.json and degradation.json in output_dir; the trackers' hparams."""
    out = Path(cfg.run.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        (out / "encoder.json").write_text(json.dumps(data.encoder_info, indent=2))
        (out / "degradation.json").write_text(json.dumps(data.degradation))
        accelerator.init_trackers("promptsr", config={k: str(v) for k, v in _flatten(cfg.to_dict()).items()})


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the final step and status. Launch under accelerate.

    Every rank ends with `accelerator.end_training()`, whatever happens after the Accelerator exists (a
    refusal, a data error, an interrupt): a rank that left without it would keep the others waiting
    minutes in the rendezvous store of a multi-node launch before they exit.
    """
    accelerator = make_accelerator(cfg)
    try:
        return _train(cfg, accelerator)
    finally:
        accelerator.end_training()


def _per_rank_batch(cfg: TrainConfig, world: int) -> int:
    per_rank, rest = divmod(cfg.optim.batch_size, world * cfg.optim.grad_accum)
    if rest or per_rank < 1:
        raise TrainingError(
            f"optim.batch_size {cfg.optim.batch_size} must be a multiple of ranks x grad_accum "
            f"({world} x {cfg.optim.grad_accum})"
        )
    return per_rank


def _parts(cfg: TrainConfig, accelerator, speed):
    """The data, the model, its schedules, optimizer and EMA, prepared by Accelerate."""
    from diffusers.training_utils import EMAModel

    data = TrainData(cfg)
    model = build_model(cfg, data.encoder_info)
    multiple = math.lcm(model.size_multiple, data.scale)
    if cfg.data.crop % multiple:
        raise TrainingError(
            f"config field 'data.crop' = {cfg.data.crop}: must be a multiple of {multiple} (the shards' scale "
            f"{data.scale} and the {cfg.model.preset} model's size multiple {model.size_multiple})"
        )
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    noise_scheduler = train_scheduler(cfg.diffusion)
    optimizer = make_optimizer(model.parameters(), cfg.optim, speed)
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.optim.lr_milestones), gamma=cfg.optim.lr_gamma
    )
    ema = EMAModel(model.parameters(), decay=cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    return data, model, noise_scheduler, optimizer, lr_scheduler, ema


def _announce(accelerator, cfg: TrainConfig, data, step: int, speed) -> None:
    accelerator.print(
        f"training {cfg.model.preset} for {cfg.optim.max_steps - step} steps from step {step}: "
        f"batch {cfg.optim.batch_size} on {accelerator.num_processes} process(es), {accelerator.device}, "
        f"{speed.describe()}"
    )
    if data.photos:
        accelerator.print(
            f"data: {data.photos} photos of {cfg.data.photos}, degraded afresh every epoch of "
            f"{data.photos * cfg.data.crops_per_photo} samples ({cfg.data.crops_per_photo} crops of "
            f"{cfg.data.photo_crop} px per photo); data.train is not read"
        )


def _skipped(state: TrainState, limit: int) -> None:
    """Count a step skipped for a non-finite loss; a TrainingError after `limit` in a row."""
    state.bad_in_a_row += 1
    state.skipped += 1
    if state.bad_in_a_row >= limit:
        raise TrainingError(
            f"{state.bad_in_a_row} non-finite losses in a row at step {state.step} "
            "(lower optim.lr, or check the data); the last good state is saved"
        )


def _train(cfg: TrainConfig, accelerator) -> dict[str, Any]:
    from accelerate.utils import set_seed

    out = Path(cfg.run.output_dir)
    world, device = accelerator.num_processes, accelerator.device
    per_rank = _per_rank_batch(cfg, world)
    set_seed(cfg.run.seed, device_specific=True)
    speed = resolve_speed(cfg.run, device)
    data, model, noise_scheduler, optimizer, lr_scheduler, ema = _parts(cfg, accelerator, speed)
    lock = hold_output_dir(accelerator, out)
    try:  # a refusal from here on (a checkpoint it cannot resume) frees the lock at once, in-process too
        state = TrainState()
        ckpt = Checkpointer(
            accelerator, out, cfg.run.keep_checkpoints, model, optimizer, lr_scheduler, ema, state, cfg.run.debug_state
        )
        resumed_from = ckpt.resume(cfg.run.resume)
        if resumed_from is not None:
            accelerator.print(f"resumed from {resumed_from} at step {state.step}")

        write_run_files(accelerator, cfg, data)
        validator = None
        if cfg.data.val and accelerator.is_main_process:
            validator = Validator(cfg, data.embedder, data.scale, accelerator.unwrap_model(model).size_multiple)

        step_fn = TrainStep(accelerator, model, optimizer, noise_scheduler, cfg.optim.grad_clip, speed, cfg.diffusion)
        batches = iter(data.loader(per_rank, state.step))
        fixed_loss = FixedLoss(data.to_device(next(batches), device), cfg.diffusion)
        log = MetricsLog(accelerator, out / "metrics.jsonl")
        if state.step == 0:
            log(0, {"fixed_loss": fixed_loss(accelerator, model, noise_scheduler)})
    except BaseException:
        lock.close()
        raise
    last_saved = state.step if resumed_from else -1
    status = "stopped"
    _announce(accelerator, cfg, data, state.step, speed)
    progress = Progress(cfg.optim.max_steps - state.step, "train", unit="step", enabled=accelerator.is_main_process)
    last_loss = "loss -"
    try:
        while state.step < cfg.optim.max_steps:
            batch = data.to_device(next(batches), device)
            loss, applied = step_fn(batch)
            if not applied:
                _skipped(state, cfg.optim.max_bad_steps)
                continue
            log.add(loss, batch.hr.shape[0] * world)
            if not accelerator.sync_gradients:
                continue
            lr_scheduler.step()
            if ema is not None:
                ema.step(accelerator.unwrap_model(model).parameters())
            state.step += 1
            state.bad_in_a_row = 0
            if state.step % cfg.run.log_every == 0 or state.step == cfg.optim.max_steps:
                record = {**log.window(), "fixed_loss": fixed_loss(accelerator, model, noise_scheduler)}
                record.update(lr=lr_scheduler.get_last_lr()[0], memory_gb=peak_memory_gib(device))
                log(state.step, {**record, "skipped_steps": state.skipped, "live_prompts": data.embedder.live_prompts})
                last_loss = f"loss {record['loss']:.4f} | {record['samples_per_s']:.1f} samples/s"
            progress.update(1, extra=f"step {state.step} | {last_loss}")
            if state.step % cfg.run.checkpoint_every == 0:
                ckpt.save()
                last_saved = state.step
            if cfg.data.val and state.step % cfg.run.val_every == 0:
                if validator is not None:
                    validator(accelerator, model, ema, state.step, lambda r: log(state.step, r))
                accelerator.wait_for_everyone()
        status = "complete"
    finally:
        progress.close()
        if state.step != last_saved and state.step > 0:
            ckpt.save()
        _write_final(accelerator, out, status, state.step, model, cfg.run.debug_state)
        lock.close()
    return {"step": state.step, "status": status}


def _write_final(accelerator, out: Path, status: str, step: int, model, debug: bool) -> None:
    """final.json (status and step); with run.debug_state, every rank's step and weight digest too."""
    net = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        (out / "final.json").write_text(json.dumps({"status": status, "step": step}))
    if debug:
        record = {"rank": accelerator.process_index, "step": step, "model": _digest(net.state_dict())}
        (out / f"final_rank{accelerator.process_index}.json").write_text(json.dumps(record))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Sections flattened to "optim.lr" keys (TensorBoard's hparams take scalars and strings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out.update(_flatten(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
