"""The PromptSR trainer: Accelerate on one CPU, one GPU or many, streaming sr-degrade shards.

    accelerate launch packages/promptsr-model/train.py --config configs/promptsr_x4.yaml optim.lr=1e-4

Data. Every rank (and DataLoader worker) streams its own resampled shards through
`sr_degrade.open_shards` (aligned random crops and flips); the DataLoader is NOT prepared by
Accelerate, so no batch is dispatched from rank 0. Each rank takes batch_size / (ranks x grad_accum)
samples a step. Prompts can be re-rendered per sample from the stored parameters in another format
(`data.prompt_formats`), and those are encoded live through `sr_degrade.embed` (each unique prompt
once); the stored embeddings are used whenever the prompt is the stored one.

Checkpoints. `save_state` every `checkpoint_every` steps into `output_dir/checkpoints/step_XXXXXXXX`
(model, optimizer, lr schedule, EMA, step counters and every rank's RNG states, safetensors for
weights), keeping the last `keep_checkpoints`; a run that stops for any reason saves first.
`resume: auto` continues from the latest. The data stream is re-seeded from (seed, step) on resume:
it does not replay the exact samples an uninterrupted run would have drawn next (that would mean
decoding everything skipped), but draws from the same distribution without repeating the start.

Non-finite losses. A step whose loss is NaN/inf on any rank is skipped on every rank (so DDP stays
in step), counted (`skipped_steps` in the logs), and after `max_bad_steps` in a row the run saves and
stops with a message.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_degrade.config import DegradationConfig
from sr_degrade.errors import SrDegradeError
from sr_degrade.shards import collate, open_shards, pad_embeddings, shard_files
from sr_degrade.text import describe

from .bicubic import bicubic_upsample, to_model_range, to_unit_range
from .config import TrainConfig, load_train_config
from .diffusion import epsilon_loss, sample, sampling_scheduler, train_scheduler
from .prompt_signal import held_out_signal


class TrainingError(SrDegradeError):
    """A run cannot start or continue; the message names the problem."""


# ---- shards and prompts -------------------------------------------------------------------------


def shard_build_info(pattern: str) -> dict[str, Any]:
    """build.json of the folder holding the shards (encoder, config, prompt format); {} if absent."""
    first = Path(shard_files(pattern)[0])
    for name in ("build.json", *sorted(p.name for p in first.parent.glob("part*-build.json"))):
        path = first.parent / name
        if path.exists():
            return json.loads(path.read_text())
    return {}


class RenderPrompt:
    """DataLoader-side transform: re-render a sample's prompt in a format drawn from `formats`.

    A sample keeps its stored prompt and embedding when the drawn format is the stored one; otherwise
    its embedding is dropped (emb = None) for the trainer to encode the new prompt live.
    """

    def __init__(self, formats: dict[str, float], stored_format: str, degradation: dict[str, Any]):
        self.names = list(formats)
        self.probs = np.array([formats[n] for n in self.names])
        self.stored = stored_format
        self.cfg_dict = degradation

    def __call__(self, sample, rng: np.random.Generator):
        fmt = self.names[int(rng.choice(len(self.names), p=self.probs))]
        if fmt != self.stored:
            cfg = DegradationConfig.from_dict(self.cfg_dict) if self.cfg_dict else DegradationConfig()
            sample.prompt = describe(sample.params, fmt, rng=rng, cfg=cfg)
            sample.emb = None
        return sample


def collate_with_embs(samples) -> dict[str, Any]:
    """`collate`, plus the per-sample stored embeddings (None where a prompt was re-rendered)."""
    batch = collate(samples)
    batch["embs"] = [s.emb for s in samples]
    return batch


class PromptEmbedder:
    """Stored embeddings where present, else the live encoder through a cache (loaded on first need)."""

    def __init__(self, encoder_name: str | None, expected: dict[str, Any] | None):
        self.name, self.expected = encoder_name, expected
        self.cache = None

    def _live(self, prompt: str) -> np.ndarray:
        if self.cache is None:
            from sr_degrade.embed import EmbeddingCache, check_same_encoder, load_text_encoder

            if self.name is None:
                raise TrainingError(
                    "prompts re-rendered in another format need the text encoder: set data.text_encoder "
                    "(e.g. minilm, or the encoder the shards were built with)"
                )
            encoder = load_text_encoder(self.name)
            if self.expected:
                check_same_encoder(self.expected, encoder.info, "the shards' embeddings")
            self.cache = EmbeddingCache(encoder)
        return self.cache(prompt)

    def __call__(self, prompts: list[str], stored: list[np.ndarray | None]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_embeddings([e if e is not None else self._live(p) for p, e in zip(prompts, stored)])


# ---- state that checkpoints carry besides model and optimizer -----------------------------------


class TrainState:
    """Step counters, saved and restored with the checkpoint."""

    def __init__(self) -> None:
        self.step = 0
        self.bad_in_a_row = 0
        self.skipped = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "bad_in_a_row": self.bad_in_a_row, "skipped": self.skipped}

    def load_state_dict(self, d: dict[str, int]) -> None:
        self.step, self.bad_in_a_row, self.skipped = int(d["step"]), int(d["bad_in_a_row"]), int(d["skipped"])


def _digest(obj: Any) -> str:
    """A stable hash of nested state (tensors, arrays, numbers, strings)."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(x, np.ndarray):
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                feed(v)
        else:
            h.update(repr(x).encode())

    feed(obj)
    return h.hexdigest()[:16]


def state_digests(model, optimizer, lr_scheduler, ema, state: TrainState) -> dict[str, str]:
    """Digests of everything a resume must restore, for checking that it did."""
    import random

    return {
        "step": str(state.step),
        "model": _digest(model.state_dict()),
        "optimizer": _digest(optimizer.state_dict()),
        "lr_scheduler": _digest(lr_scheduler.state_dict()),
        "ema": _digest(ema.state_dict()) if ema is not None else "none",
        "torch_rng": _digest(torch.get_rng_state()),
        "numpy_rng": _digest(np.random.get_state()[1]),  # noqa: NPY002 - the global state accelerate saves
        "python_rng": _digest(random.getstate()[1]),
    }


# ---- the run ------------------------------------------------------------------------------------


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's on a GPU, the process's max RSS on a CPU (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the final metrics. Launch under accelerate."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.training_utils import EMAModel

    from .unet import build_unet

    out = Path(cfg.run.output_dir)
    use_cpu = cfg.run.cpu or not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=cfg.run.mixed_precision if not use_cpu or cfg.run.mixed_precision == "bf16" else "no",
        gradient_accumulation_steps=cfg.optim.grad_accum,
        log_with="tensorboard",
        project_dir=str(out),
        step_scheduler_with_optimizer=False,  # stepped once per optimizer step, whatever the world size
    )
    world = accelerator.num_processes
    per_rank, rest = divmod(cfg.optim.batch_size, world * cfg.optim.grad_accum)
    if rest or per_rank < 1:
        raise TrainingError(
            f"optim.batch_size {cfg.optim.batch_size} must be a multiple of ranks x grad_accum "
            f"({world} x {cfg.optim.grad_accum})"
        )
    set_seed(cfg.run.seed, device_specific=True)

    # Shards, their encoder, and the model's text width.
    info = shard_build_info(cfg.data.train)
    shard_encoder = info.get("encoder")
    stored_format = info.get("fingerprint", {}).get("prompt_format", "original")
    needs_live = any(p > 0 and f != stored_format for f, p in cfg.data.prompt_formats.items()) or not shard_encoder
    from sr_degrade.embed import encoder_name

    live_name = cfg.data.text_encoder or (encoder_name(shard_encoder) if shard_encoder else None)
    embedder = PromptEmbedder(live_name, shard_encoder)
    if needs_live:
        embedder(["light noise"], [None])  # load and check the encoder now, not at the first batch
    encoder_info = shard_encoder or embedder.cache.info.to_dict()
    if cfg.data.val:
        from sr_degrade.embed import check_same_encoder

        val_encoder = shard_build_info(cfg.data.val).get("encoder")
        if val_encoder:
            check_same_encoder(encoder_info, val_encoder, f"the validation shards {cfg.data.val}")
    text_dim = int(encoder_info["dim"])
    overrides = dict(cfg.model.overrides)
    if overrides.get("cross_attention_dim", text_dim) != text_dim:
        raise TrainingError(
            f"model.overrides.cross_attention_dim = {overrides['cross_attention_dim']} but the text encoder "
            f"{encoder_info['id']} gives {text_dim}-d embeddings"
        )
    overrides["cross_attention_dim"] = text_dim
    overrides["text_encoder"] = encoder_info["id"]  # recorded in the model's config.json
    try:
        model = build_unet(cfg.model.preset, **overrides)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    scale = int(info.get("config", {}).get("scale", 4))

    noise_scheduler = train_scheduler(cfg.diffusion)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay
    )
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.optim.lr_milestones), gamma=cfg.optim.lr_gamma
    )
    ema = EMAModel(model.parameters(), decay=cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    state = TrainState()
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    # Resume.
    resumed_from = None
    if cfg.run.resume:
        found = _checkpoints(out) if cfg.run.resume == "auto" else [Path(cfg.run.resume)]
        if found:
            resumed_from = found[-1]
            if not resumed_from.is_dir():
                raise TrainingError(f"run.resume: no checkpoint folder at {resumed_from}")
            try:
                accelerator.load_state(str(resumed_from))
            except (RuntimeError, KeyError, ValueError) as e:
                raise TrainingError(
                    f"cannot resume from {resumed_from}: {str(e).splitlines()[0]} (a checkpoint of another "
                    "preset or config?)"
                ) from None
            if accelerator.is_main_process:
                digests = state_digests(accelerator.unwrap_model(model), optimizer, lr_scheduler, ema, state)
                (out / "resume_check.json").write_text(json.dumps({"from": str(resumed_from), **digests}, indent=2))
            accelerator.print(f"resumed from {resumed_from} at step {state.step}")

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        (out / "encoder.json").write_text(json.dumps(encoder_info, indent=2))
        (out / "degradation.json").write_text(json.dumps(info.get("config") or DegradationConfig().to_dict()))
        flat = {k: str(v) for k, v in _flatten(cfg.to_dict()).items()}
        accelerator.init_trackers("promptsr", config=flat)

    transform = None
    if any(f != stored_format for f in cfg.data.prompt_formats):
        transform = RenderPrompt(dict(cfg.data.prompt_formats), stored_format, info.get("config") or {})
    dataset = open_shards(
        cfg.data.train,
        crop=cfg.data.crop,
        mode="train",
        shuffle=cfg.data.shuffle_buffer,
        seed=cfg.run.seed * 1_000_003 + state.step,  # re-seeded on resume (see module doc)
        transform=transform,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=per_rank, num_workers=cfg.data.num_workers, collate_fn=collate_with_embs
    )
    device = accelerator.device

    def prepare_batch(batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        hr = to_model_range(batch["hr"].to(device))
        cond = bicubic_upsample(to_model_range(batch["lr"].to(device)), scale)
        emb, mask = embedder(batch["prompt"], batch["embs"])
        return hr, cond, emb.to(device), mask.to(device)

    metrics_path = out / "metrics.jsonl"
    batches = iter(loader)
    fixed = prepare_batch(next(batches))  # a fixed batch, timesteps and noise: a loss curve without noise
    gen = torch.Generator().manual_seed(12345)
    fixed_t = torch.randint(0, cfg.diffusion.num_train_timesteps, (fixed[0].shape[0],), generator=gen).to(device)
    fixed_noise = torch.randn(fixed[0].shape, generator=gen).to(device)

    def fixed_loss() -> float:
        with torch.no_grad(), accelerator.autocast():
            loss = epsilon_loss(model, *fixed, noise_scheduler, timesteps=fixed_t, noise=fixed_noise)
        return float(accelerator.reduce(loss.detach(), "mean"))

    def log(record: dict[str, Any]) -> None:
        accelerator.log(record, step=state.step)
        if accelerator.is_main_process:
            with open(metrics_path, "a") as f:
                f.write(json.dumps({"step": state.step, **record}) + "\n")

    def save() -> None:
        path = out / "checkpoints" / f"step_{state.step:08d}"
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            digests = state_digests(accelerator.unwrap_model(model), optimizer, lr_scheduler, ema, state)
            (path / "digests.json").write_text(json.dumps(digests, indent=2))
            for old in _checkpoints(out)[: -cfg.run.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    if state.step == 0:
        log({"fixed_loss": fixed_loss()})
    last_saved = state.step if resumed_from else -1
    seen, window_start, running = 0, time.perf_counter(), []
    status = "stopped"
    try:
        while state.step < cfg.optim.max_steps:
            hr, cond, emb, mask = prepare_batch(next(batches))
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = epsilon_loss(model, hr, cond, emb, mask, noise_scheduler)
                bad = accelerator.reduce(torch.tensor(0.0 if torch.isfinite(loss) else 1.0, device=device), "sum")
                if bad > 0:  # every rank skips together, so DDP stays in step
                    optimizer.zero_grad(set_to_none=True)
                    state.bad_in_a_row += 1
                    state.skipped += 1
                    if state.bad_in_a_row >= cfg.optim.max_bad_steps:
                        raise TrainingError(
                            f"{state.bad_in_a_row} non-finite losses in a row at step {state.step} "
                            "(lower optim.lr, or check the data); the last good state is saved"
                        )
                    continue
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            running.append(loss.detach())
            seen += hr.shape[0] * world
            if not accelerator.sync_gradients:
                continue
            lr_scheduler.step()
            if ema is not None:
                ema.step(accelerator.unwrap_model(model).parameters())
            state.step += 1
            state.bad_in_a_row = 0
            if state.step % cfg.run.log_every == 0 or state.step == cfg.optim.max_steps:
                elapsed = time.perf_counter() - window_start
                mean_loss = float(accelerator.reduce(torch.stack(running).mean(), "mean"))
                log(
                    {
                        "loss": mean_loss,
                        "fixed_loss": fixed_loss(),
                        "lr": lr_scheduler.get_last_lr()[0],
                        "samples_per_s": seen / elapsed,
                        "memory_gb": peak_memory_gib(device),
                        "skipped_steps": state.skipped,
                        "live_prompts": len(embedder.cache) if embedder.cache is not None else 0,
                    }
                )
                seen, window_start, running = 0, time.perf_counter(), []
            if state.step % cfg.run.checkpoint_every == 0:
                save()
                last_saved = state.step
            if cfg.data.val and state.step % cfg.run.val_every == 0:
                validate(cfg, accelerator, model, ema, embedder, scale, state.step, log)
        status = "complete"
    finally:
        if state.step != last_saved and state.step > 0:
            save()
        if accelerator.is_main_process:
            digest = _digest(accelerator.unwrap_model(model).state_dict())
            (out / "final.json").write_text(json.dumps({"status": status, "step": state.step, "model": digest}))
        final_rank = {"rank": accelerator.process_index, "model": _digest(accelerator.unwrap_model(model).state_dict())}
        (out / f"final_rank{accelerator.process_index}.json").write_text(json.dumps(final_rank))
        accelerator.end_training()
    return {"step": state.step, "status": status}


@torch.no_grad()
def validate(cfg: TrainConfig, accelerator, model, ema, embedder: PromptEmbedder, scale: int, step: int, log) -> None:
    """DDIM samples of the first `val_samples` held-out samples (centre crops), PSNR/SSIM next to
    bicubic, and a grid (bicubic | PromptSR | HR) under output_dir/val/. Main process only."""
    from sr_degrade.imageio import write_image
    from sr_degrade.sheet import contact_sheet

    from .metrics import psnr_ssim_batch

    if accelerator.is_main_process:
        samples = []
        for s in open_shards(cfg.data.val, mode="eval"):
            size = min(cfg.data.crop, s.hr.shape[0], s.hr.shape[1]) // (scale * 8) * (scale * 8)
            y, x = (s.hr.shape[0] - size) // 2 // scale * scale, (s.hr.shape[1] - size) // 2 // scale * scale
            s.hr = np.ascontiguousarray(s.hr[y : y + size, x : x + size])
            s.lr = np.ascontiguousarray(s.lr[y // scale : (y + size) // scale, x // scale : (x + size) // scale])
            samples.append(s)
            if len(samples) == cfg.run.val_samples:
                break
        if samples:
            size = min(s.hr.shape[0] for s in samples)
            samples = [s for s in samples if s.hr.shape[0] == size]
            batch = collate_with_embs(samples)
            device = accelerator.device
            lr = to_model_range(batch["lr"].to(device))
            cond = bicubic_upsample(lr, scale)
            emb, mask = embedder(batch["prompt"], batch["embs"])
            net = accelerator.unwrap_model(model)
            if ema is not None:
                ema.store(net.parameters())
                ema.copy_to(net.parameters())
            net.eval()
            scheduler = sampling_scheduler("ddim", cfg.diffusion)
            gen = torch.Generator().manual_seed(cfg.run.seed)
            with accelerator.autocast():
                sr = sample(
                    net, cond, emb.to(device), mask.to(device), scheduler, cfg.run.val_steps, generator=gen,
                    clip=cfg.diffusion.clip,
                )  # fmt: skip
            # The prompt signal (promptsr.prompt_signal) on the same samples and the same (EMA) weights.
            # A failure to encode the empty or wrong prompts costs these numbers, never the run.
            try:
                degradation = shard_build_info(cfg.data.val).get("config")
                with accelerator.autocast():
                    signal = held_out_signal(
                        net, to_model_range(batch["hr"].to(device)), cond, (emb.to(device), mask.to(device)),
                        batch["params"], lambda prompts: embedder(prompts, [None] * len(prompts)),
                        train_scheduler(cfg.diffusion),
                        DegradationConfig.from_dict(degradation) if degradation else DegradationConfig(),
                        seed=cfg.run.seed,
                    )  # fmt: skip
            except (SrDegradeError, OSError) as e:
                accelerator.print(f"warning: val_eps_* not computed at step {step}: {e}")
                signal = {}
            net.train()
            if ema is not None:
                ema.restore(net.parameters())
            hr01 = batch["hr"]
            sr01, bic01 = to_unit_range(sr.float().cpu()), to_unit_range(cond.float().cpu())
            psnr, ssim = psnr_ssim_batch(sr01, hr01, crop_border=scale)
            psnr_b, ssim_b = psnr_ssim_batch(bic01, hr01, crop_border=scale)
            log(
                {
                    "val_psnr": float(np.mean(psnr)),
                    "val_ssim": float(np.mean(ssim)),
                    "val_psnr_bicubic": float(np.mean(psnr_b)),
                    "val_ssim_bicubic": float(np.mean(ssim_b)),
                    **signal,
                }
            )

            def img(t: torch.Tensor) -> np.ndarray:
                return (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

            rows = [
                (
                    [img(bic01[i]), img(sr01[i]), img(hr01[i])],
                    f"{batch['prompt'][i]}  PSNR {psnr[i]:.2f} / {psnr_b[i]:.2f}",
                )
                for i in range(len(samples))
            ]
            grid = contact_sheet(rows, cell=192, header=["bicubic", "PromptSR", "HR"])
            write_image(Path(cfg.run.output_dir) / "val" / f"step_{step:08d}.png", grid)
    accelerator.wait_for_everyone()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Sections flattened to "optim.lr" keys (TensorBoard's hparams take scalars and strings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out.update(_flatten(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main(argv: list[str] | None = None) -> int:
    """`train.py --config FILE [key=value ...]`: one clear line and exit 2 for what a user can fix."""
    import argparse

    ap = argparse.ArgumentParser(prog="train.py", description="Train PromptSR (launch with accelerate launch).")
    ap.add_argument("--config", "-c", help="YAML config (configs/promptsr_x4.yaml, configs/tiny_cpu.yaml)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 run.output_dir=runs/a")
    args = ap.parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        result = train(cfg)
    except SrDegradeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the last state is saved (resume: auto continues it)", file=sys.stderr)
        return 130
    print(f"training {result['status']} at step {result['step']}")
    return 0
