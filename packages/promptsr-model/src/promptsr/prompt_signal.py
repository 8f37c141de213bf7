"""A cheap, always-on learning signal for prompts: held-out losses under the true, empty and wrong prompt.

The loss is the training loss in the model's own parametrisation (DiffusionConfig.prediction / target:
the epsilon loss of Eq. 1 for the paper's epsilon / image; the x0 or v loss, of the image or of its
residual over bicubic, otherwise). The metric names keep their val_eps_ prefix whatever it is.

The direction of the paper's Table 1 (with vs without prompt), measured in minutes instead of a sampling
evaluation. Every held-out sample is noised at a few timesteps with a few noise draws, and the very same
(t, noise) pairs are scored under each prompt condition:

- true: the sample's own prompt;
- empty: the empty prompt (the paper's "without prompt");
- wrong: `wrong_prompt`, each applied component moved to the level furthest from its true one.

A model that reads its prompt has true < wrong and true < empty. Because the draws are paired, the
differences (wrong - true, empty - true) have far smaller standard errors than the losses themselves:
they are what shows a signal. Standard errors are over the per-(sample, draw) losses (n = samples x draws).

    from promptsr.prompt_signal import wrong_prompt
    wrong_prompt("light blur, upsample, medium noise, downsample")
    # 'heavy blur, downsample, heavy noise, downsample'
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_degrade.config import DegradationConfig
from sr_degrade.errors import SrDegradeError
from sr_degrade.params import DegradationParams
from sr_degrade.text import COMPONENTS, bins, parse_prompt, phrase

from .diffusion import diffused, wanted_output

#: The prompt conditions, in report order; "true" is the reference of the differences.
CONDITIONS: tuple[str, ...] = ("true", "empty", "wrong")

#: The wrong level of blur, noise and jpeg: the level furthest from the true one. Medium is equidistant
#: from light and heavy; the fixed choice is heavy.
WRONG_LEVEL = {"light": "heavy", "medium": "heavy", "heavy": "light"}
#: The wrong resize1: upsample and downsample swap; unchange (factor 1) is equidistant: upsample.
WRONG_RESIZE1 = {"upsample": "downsample", "downsample": "upsample", "unchange": "upsample"}

_DEFAULT = DegradationConfig()


def wrong_levels(levels: Mapping[str, str]) -> dict[str, str]:
    """{component: level} with every present component moved by the fixed rule (module doc); resize2 kept."""
    out = {}
    for component in COMPONENTS:
        if component not in levels:
            continue  # an omitted op stays omitted: the wrong prompt differs in levels only
        level = levels[component]
        if component == "resize2":
            out[component] = level
        elif component == "resize1":
            out[component] = WRONG_RESIZE1[level]
        else:
            out[component] = WRONG_LEVEL[level]
    return out


def wrong_prompt(source: DegradationParams | Mapping[str, str] | str, cfg: DegradationConfig = _DEFAULT) -> str:
    """The wrong prompt of a sample, in the original format (blur, resize1, noise, jpeg, resize2).

    `source`: the sample's degradation parameters (binned with `cfg`), its {component: level} (`bins`,
    `parse_prompt`), or its prompt (parsed strictly). resize2's "downsample" is always kept, so the result
    is one of the prompts of an exported model's embedding table.
    """
    if isinstance(source, DegradationParams):
        levels = bins(source, cfg)
    elif isinstance(source, str):
        levels = parse_prompt(source, strict=True, cfg=cfg)
    else:
        levels = dict(source)
    moved = wrong_levels(levels)
    moved.setdefault("resize2", "downsample")
    return ", ".join(phrase(c, lvl, cfg) for c, lvl in moved.items())


# ---- paired losses --------------------------------------------------------------------------------


@torch.no_grad()
def paired_draw_losses(
    model: Callable,
    hr: torch.Tensor,
    cond: torch.Tensor,
    embs: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]],
    scheduler,
    draws: int = 4,
    generator: torch.Generator | None = None,
    target: str = "image",
) -> dict[str, torch.Tensor]:
    """Per-(sample, draw) losses (B, draws) of each condition, on the same t and noise for all: the training
    loss in the model's parametrisation (the scheduler's prediction_type, on `target`: image or residual;
    the epsilon loss of Eq. 1 for the paper's).

    hr, cond: (B, 3, H, W) in [-1, 1]; embs: condition -> (emb (B, L, D), mask (B, L) or None);
    scheduler: the training schedule (its add_noise and num_train_timesteps). Draw k takes its timestep
    uniformly from the k-th of `draws` equal strata of [0, T), so a few draws cover the schedule. The draws
    come from `generator` on the CPU (reproducible on any device); one forward pass of B per draw and
    condition (the memory of a sampling step). The loss is `diffusion_losses`' per sample, unweighted.
    """
    if draws < 1:
        raise SrDegradeError(f"draws must be at least 1, got {draws}")
    b, n_t = hr.shape[0], int(scheduler.config.num_train_timesteps)
    out = {name: torch.empty(b, draws) for name in embs}
    for k in range(draws):
        u = torch.rand(b, generator=generator, dtype=torch.float64)
        t = ((k + u) * n_t / draws).floor().long().clamp_(0, n_t - 1).to(hr.device)
        noise = torch.randn(hr.shape, generator=generator, dtype=torch.float32).to(hr.device, hr.dtype)
        x0 = diffused(hr, cond, target)
        x = scheduler.add_noise(x0, noise, t)
        wanted = wanted_output(scheduler, x0, noise, t).float()
        for name, (emb, mask) in embs.items():
            pred = model(x, t, emb.to(hr.device), None if mask is None else mask.to(hr.device), condition=cond)
            out[name][:, k] = (pred.float() - wanted).pow(2).mean(dim=(1, 2, 3)).cpu()
    return out


@dataclass(frozen=True)
class Estimate:
    """A mean, its standard error (NaN for n < 2) and the number of values."""

    mean: float
    se: float
    n: int


def estimate(values: torch.Tensor | np.ndarray) -> Estimate:
    """Mean and standard error (sample std / sqrt(n)) of all the values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size >= 2 else math.nan
    return Estimate(float(v.mean()) if v.size else math.nan, se, int(v.size))


def summarise(losses: Mapping[str, torch.Tensor | np.ndarray], reference: str = "true") -> dict[str, Estimate]:
    """Each condition's mean loss, and each other condition's paired difference "NAME_minus_true"."""
    out = {name: estimate(v) for name, v in losses.items()}
    ref = np.asarray(losses[reference], dtype=np.float64)
    for name, v in losses.items():
        if name != reference:
            out[f"{name}_minus_{reference}"] = estimate(np.asarray(v, dtype=np.float64) - ref)
    return out


def flat(summary: Mapping[str, Estimate], prefix: str = "val_eps_") -> dict[str, float]:
    """{prefix+name: mean, prefix+name+"_se": se} for logging (val_eps_true, val_eps_true_se, ...)."""
    out: dict[str, float] = {}
    for name, e in summary.items():
        out[f"{prefix}{name}"] = e.mean
        out[f"{prefix}{name}_se"] = e.se
    return out


# ---- an exported model on evaluation shards -------------------------------------------------------


def centre_crop(hr: np.ndarray, lr: np.ndarray, scale: int, multiple: int, crop: int) -> tuple[np.ndarray, ...]:
    """Centre HR/LR crops, the HR side min(crop, side) (crop 0: the whole side) rounded down to `multiple`."""
    h, w = hr.shape[:2]
    ch, cw = ((min(crop, s) if crop > 0 else s) // multiple * multiple for s in (h, w))
    if ch < multiple or cw < multiple:
        raise SrDegradeError(f"HR {h}x{w} is smaller than {multiple} pixels (the model's size multiple x scale)")
    y, x = (h - ch) // 2 // scale * scale, (w - cw) // 2 // scale * scale
    hr_c = np.ascontiguousarray(hr[y : y + ch, x : x + cw])
    lr_c = np.ascontiguousarray(lr[y // scale : (y + ch) // scale, x // scale : (x + cw) // scale])
    return hr_c, lr_c


def ablate_loss(
    model: Any,
    datasets: Mapping[str, str | Path],
    *,
    limit: int | None = None,
    seed: int = 0,
    draws: int = 4,
    crop: int = 256,
    device: str = "cpu",
) -> dict[str, Any]:
    """The three paired losses of an exported model (`promptsr.export.load_model`) on evaluation shards.

    `datasets`: label -> shard folder. Each image is centre-cropped (`centre_crop`, HR side `crop`) and
    scored with `draws` paired draws from one torch.Generator(seed) over the whole pass. Prompts come from
    the model's embedding table (wrong and empty always are there); a stored prompt outside the table
    (e.g. a shuffled one) uses the shard's own embedding, when the shards' encoder is the model's.
    Returns the record that `loss_markdown` prints and `promptsr ablate loss --out` writes.
    """
    from sr_degrade.embed import check_same_encoder
    from sr_degrade.shards import open_shards, pad_embeddings, read_build_info

    from .bicubic import bicubic_upsample, to_model_range
    from .diffusion import train_scheduler

    scale, deg = model.scale, model.degradation
    multiple = model.unet.size_multiple * scale
    scheduler = train_scheduler(model.diffusion)
    net = model.unet.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    blocks: dict[str, Any] = {}
    for label, folder in datasets.items():
        shard_encoder = read_build_info(str(folder)).get("encoder")
        losses: dict[str, list[torch.Tensor]] = {c: [] for c in CONDITIONS}
        count = 0
        for s in open_shards(str(folder), mode="eval"):
            if limit is not None and count >= limit:
                break
            if s.scale != scale:
                raise SrDegradeError(f"{label}/{s.key}: x{s.scale} data for a x{scale} model")
            hr, lr = centre_crop(s.hr, s.lr, scale, multiple, crop)
            prompts = {"true": s.prompt, "empty": "", "wrong": wrong_prompt(s.params, deg)}
            embs = {}
            for name, text in prompts.items():
                emb = model.lookup(text)
                if emb is None and name == "true" and s.emb is not None:
                    if shard_encoder is None:
                        raise SrDegradeError(f"{folder}: no build.json naming the encoder of its embeddings")
                    check_same_encoder(model.encoder, shard_encoder, f"the embeddings of {folder}")
                    emb = s.emb
                if emb is None:
                    raise SrDegradeError(f"{label}/{s.key}: prompt {text!r} is not in the model's table")
                embs[name] = pad_embeddings([emb])
            hr_t = to_model_range(torch.from_numpy(hr).permute(2, 0, 1)[None].float().div(255.0)).to(device)
            lr_t = to_model_range(torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255.0)).to(device)
            cond = bicubic_upsample(lr_t, scale)
            losses_of = paired_draw_losses(net, hr_t, cond, embs, scheduler, draws, gen, model.diffusion.target)
            for name, v in losses_of.items():
                losses[name].append(v)
            count += 1
        if count == 0:
            raise SrDegradeError(f"{folder}: no samples in the shards")
        summary = summarise({c: torch.cat(v) for c, v in losses.items()})
        blocks[label] = {"images": count, "estimates": {k: asdict(e) for k, e in summary.items()}}
    return {
        "study": "loss",
        "model": str(getattr(model, "folder", "")),
        "draws": draws,
        "seed": seed,
        "prediction": model.diffusion.prediction,
        "target": model.diffusion.target,
        "crop": crop,
        "conditions": list(CONDITIONS),
        "wrong_rule": "blur/noise/jpeg: light<->heavy, medium->heavy; resize1: upsample<->downsample, "
        "unchange->upsample; resize2 kept; omitted ops stay omitted",
        "datasets": blocks,
    }


def _num(x: float, digits: int = 4) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}g}"


def loss_markdown(record: Mapping[str, Any]) -> str:
    """One table per dataset: condition, mean loss, SE, and the paired difference vs true ± SE."""
    lines = [
        "# Prompt signal: held-out loss under the true, empty and wrong prompt",
        "",
        f"The training loss of a {record.get('prediction', 'epsilon')} / {record.get('target', 'image')} model "
        "(what it predicts / of what; epsilon / image is the paper's Eq. 1).",
        "",
        f"{record['draws']} paired draws per image (same t and noise for every condition), seed {record['seed']}, "
        f"HR centre crop {record['crop'] or 'whole image'}. Expected once the model reads its prompt: "
        "true < wrong and true < empty.",
        "",
    ]
    for label, block in record["datasets"].items():
        est = block["estimates"]
        lines += [f"### {label} ({block['images']} images)", ""]
        lines += ["| Condition | eps loss ↓ | SE | vs true (± SE) |", "|---|---|---|---|"]
        for c in record["conditions"]:
            d = est.get(f"{c}_minus_true")
            diff = f"{d['mean']:+.4g} ± {_num(d['se'], 2)}" if d else "-"
            lines.append(f"| {c} | {_num(est[c]['mean'])} | {_num(est[c]['se'], 2)} | {diff} |")
        lines.append("")
    return "\n".join(lines)


def write_loss_ablation(record: Mapping[str, Any], out: str | Path) -> None:
    """OUT/ablation_loss.md and OUT/ablation_loss.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation_loss.md").write_text(loss_markdown(record))
    (out / "ablation_loss.json").write_text(json.dumps(record, indent=2) + "\n")


def held_out_signal(
    model: Callable,
    hr: torch.Tensor,
    cond: torch.Tensor,
    true: tuple[torch.Tensor, torch.Tensor | None],
    params: list[DegradationParams],
    embed: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    scheduler,
    degradation: DegradationConfig = _DEFAULT,
    draws: int = 4,
    seed: int = 0,
    prefix: str = "val_eps_",
    target: str = "image",
) -> dict[str, float]:
    """The trainer's validation signal: `paired_draw_losses`, summarised, under the true prompts (`true` = their (emb,
    mask)), the empty prompt and each sample's `wrong_prompt`, encoded by `embed(prompts) -> (emb, mask)`;
    flattened to val_eps_true, val_eps_true_se, ..., val_eps_wrong_minus_true(_se). A fresh
    torch.Generator(seed) each call: every validation scores the same draws, a curve without draw noise."""
    b = hr.shape[0]
    embs = {"true": true, "empty": embed([""] * b), "wrong": embed([wrong_prompt(p, degradation) for p in params])}
    gen = torch.Generator().manual_seed(seed)
    return flat(summarise(paired_draw_losses(model, hr, cond, embs, scheduler, draws, gen, target)), prefix)
