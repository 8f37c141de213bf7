"""Validation during training: DDIM samples of a fixed held-out set, PSNR/SSIM next to bicubic, the
prompt signal, and a grid (bicubic | PromptSR | HR) under output_dir/val/.

The set is the first `run.val_samples` samples of `data.val` in key order, centre-cropped
(`train_data.validation_samples`), read once when the run starts, on the main process only: the
figures do not depend on the number of processes. Their keys are written to
output_dir/val/samples.json. Sampling uses the EMA weights when the run keeps an EMA.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_degrade.config import DegradationConfig
from sr_degrade.errors import SrDegradeError

from .bicubic import bicubic_upsample, to_model_range, to_unit_range
from .config import TrainConfig
from .diffusion import sample, sampling_scheduler, train_scheduler
from .prompt_signal import held_out_signal
from .train_data import PromptEmbedder, collate_with_embs, shard_build_info, validation_samples


class Validator:
    """Validates a model on the run's fixed held-out set; `keys` names the samples it uses."""

    def __init__(self, cfg: TrainConfig, embedder: PromptEmbedder, scale: int, size_multiple: int):
        self.cfg, self.embedder, self.scale = cfg, embedder, scale
        self.samples = validation_samples(
            cfg.data.val, cfg.run.val_samples, cfg.run.val_crop or cfg.data.crop, scale, size_multiple * scale
        )  # fmt: skip
        self.keys = [s.key for s in self.samples]
        folder = Path(cfg.run.output_dir) / "val"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "samples.json").write_text(json.dumps({"shards": str(cfg.data.val), "keys": self.keys}, indent=2))
        degradation = shard_build_info(cfg.data.val).get("config")
        self.degradation = DegradationConfig.from_dict(degradation) if degradation else DegradationConfig()

    @torch.no_grad()
    def __call__(self, accelerator, model, ema, step: int, log: Callable[[dict[str, Any]], None]) -> None:
        """Validate `model` (the EMA weights when `ema` is given) and `log` the figures. Main process only."""
        if not self.samples:
            return
        cfg, device = self.cfg, accelerator.device
        batch = collate_with_embs(self.samples)
        cond = bicubic_upsample(to_model_range(batch["lr"].to(device)), self.scale)
        emb, mask = (t.to(device) for t in self.embedder(batch["prompt"], batch["embs"]))
        net = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(net.parameters())
            ema.copy_to(net.parameters())
        net.eval()
        try:
            gen = torch.Generator().manual_seed(cfg.run.seed)
            scheduler = sampling_scheduler("ddim", cfg.diffusion)
            with accelerator.autocast():
                sr = sample(
                    net, cond, emb, mask, scheduler, cfg.run.val_steps, generator=gen, clip=cfg.diffusion.clip,
                    target=cfg.diffusion.target,
                )  # fmt: skip
            signal = self._signal(accelerator, net, batch, cond, emb, mask, step)
        finally:
            net.train()
            if ema is not None:
                ema.restore(net.parameters())
        hr01 = batch["hr"]
        sr01, bic01 = to_unit_range(sr.float().cpu()), to_unit_range(cond.float().cpu())
        self._log_and_grid(step, log, batch["prompt"], hr01, sr01, bic01, signal)

    def _signal(self, accelerator, net, batch, cond, emb, mask, step: int) -> dict[str, float]:
        """The prompt signal (promptsr.prompt_signal) on the same samples and weights. A failure to
        encode the empty or wrong prompts costs these numbers, never the run."""
        try:
            with accelerator.autocast():
                return held_out_signal(
                    net, to_model_range(batch["hr"].to(accelerator.device)), cond, (emb, mask), batch["params"],
                    lambda prompts: self.embedder(prompts, [None] * len(prompts)),
                    train_scheduler(self.cfg.diffusion), self.degradation, seed=self.cfg.run.seed,
                    target=self.cfg.diffusion.target,
                )  # fmt: skip
        except (SrDegradeError, OSError) as e:
            accelerator.print(f"warning: val_eps_* not computed at step {step}: {e}")
            return {}

    def _log_and_grid(self, step, log, prompts, hr01, sr01, bic01, signal) -> None:
        from sr_degrade.imageio import write_image
        from sr_degrade.sheet import contact_sheet

        from .metrics import psnr_ssim_batch

        psnr, ssim = psnr_ssim_batch(sr01, hr01, crop_border=self.scale)
        psnr_b, ssim_b = psnr_ssim_batch(bic01, hr01, crop_border=self.scale)
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
            ([img(bic01[i]), img(sr01[i]), img(hr01[i])], f"{prompts[i]}  PSNR {psnr[i]:.2f} / {psnr_b[i]:.2f}")
            for i in range(len(prompts))
        ]
        grid = contact_sheet(rows, cell=192, header=["bicubic", "PromptSR", "HR"])
        write_image(Path(self.cfg.run.output_dir) / "val" / f"step_{step:08d}.png", grid)
