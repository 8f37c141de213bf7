"""A self-contained model folder from a training run, and loading it back.

    promptsr export runs/promptsr_x4 -o model/

model/
    promptsr.json             format, version, scale, preset, trained steps, EMA or not, encoder identity
    unet/                     the denoiser: config.json + diffusion_pytorch_model.safetensors
                              (the EMA weights when the run kept an EMA)
    scheduler/                diffusers DDIM scheduler config on the training schedule (T = 2000, linear betas)
    diffusion.json            our DiffusionConfig
    encoder.json              the text encoder the model was trained with (id, revision, dtype, D)
    degradation.json          the degradation config of the training data (ranges, bins, words)
    vocabulary.json           the prompt phrases, and the prompts of the embedding table in table order
    embeddings.safetensors    float16 [L, D] of every prompt the vocabulary forms in the original format
                              (each op at each level or absent, fixed order, resize2's phrase always) + the empty prompt

With the table, inference with an in-vocabulary prompt needs no text encoder at all.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_degrade.config import LEVELS, RESIZE1_LEVELS, DegradationConfig, dataclass_to_dict
from sr_degrade.errors import SrDegradeError
from sr_degrade.progress import Progress
from sr_degrade.text import phrase, vocabulary

from ._version import __version__
from .config import TrainConfig, load_train_config
from .diffusion import DEFAULT_CLIP, DiffusionConfig, sampling_scheduler

FORMAT = "promptsr-model"


def table_prompts(cfg: DegradationConfig) -> list[str]:
    """Every original-format prompt of the vocabulary (4 x 4 x 4 x 4 = 256), then the empty prompt."""
    choices = [
        [None, *[phrase("blur", lvl, cfg) for lvl in LEVELS]],
        [None, *[phrase("resize1", lvl, cfg) for lvl in RESIZE1_LEVELS]],
        [None, *[phrase("noise", lvl, cfg) for lvl in LEVELS]],
        [None, *[phrase("jpeg", lvl, cfg) for lvl in LEVELS]],
    ]
    prompts = []
    for combo in itertools.product(*choices):
        prompts.append(", ".join([p for p in combo if p is not None] + [cfg.resize2.word]))
    return [*prompts, ""]


def normalise_prompt(text: str) -> str:
    """Case, spacing and brackets do not change a table look-up:
    "[Heavy Blur,downsample]" -> "heavy blur, downsample"."""
    parts = [" ".join(p.strip(" []()\"'").lower().split()) for p in text.strip(" []()\"'").split(",")]
    return ", ".join(p for p in parts if p)


def _latest_checkpoint(run: Path) -> Path:
    from .checkpoint import checkpoints

    found = checkpoints(run)
    if not found:
        raise SrDegradeError(f"{run}: no checkpoints/step_* folder; is this a training run directory?")
    return found[-1]


def _load_checkpoint_weights(model: Any, ckpt: Path, use_ema: bool) -> tuple[bool, int | None]:
    """Load a checkpoint's weights into `model` by name: the EMA (ema.safetensors) when `use_ema` and
    the checkpoint has one, else the raw weights. Returns (EMA used, trained steps or None)."""
    from safetensors.torch import load_file

    from .checkpoint import EMA_FILE, LEGACY_PATTERN, STATE_FILE, check_complete, check_layout, read_ema

    if not (ckpt / "model.safetensors").exists():
        raise SrDegradeError(f"{ckpt}: no model.safetensors; is this a checkpoint folder?")
    if use_ema or not any(ckpt.glob(LEGACY_PATTERN)):
        check_layout(ckpt)  # an older layout is refused unless only its raw weights are asked for
        try:
            check_complete(ckpt, ema=use_ema, rng=ckpt / "rng_0.safetensors")
        except SrDegradeError as e:
            raise SrDegradeError(f"cannot export from {ckpt}: {e}") from None
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    step = json.loads((ckpt / STATE_FILE).read_text())["step"] if (ckpt / STATE_FILE).exists() else None
    if not (use_ema and (ckpt / EMA_FILE).exists()):
        return False, step
    shadow, _ = read_ema(ckpt / EMA_FILE)
    named = dict(model.named_parameters())
    if set(shadow) != set(named):
        raise SrDegradeError(f"{ckpt / EMA_FILE} does not match the model's parameters")
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(shadow[name])
    return True, step


def _stage(message: str) -> None:
    print(f"export: {message}", file=sys.stderr, flush=True)


def export_model(
    run_dir: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    use_ema: bool = True,
    text_encoder: str | None = None,
) -> Path:
    """Write the model folder described in the module doc from a run (its latest checkpoint)."""

    from sr_degrade.embed import check_same_encoder, encoder_name, load_text_encoder

    from .unet import build_unet

    run, out = Path(run_dir), Path(out)
    if not (run / "config.yaml").exists():
        raise SrDegradeError(f"{run}: no config.yaml; is this a training run directory?")
    cfg: TrainConfig = load_train_config(run / "config.yaml")
    encoder_info = json.loads((run / "encoder.json").read_text())
    degradation = json.loads((run / "degradation.json").read_text())
    deg_cfg = DegradationConfig.from_dict(degradation)
    ckpt = Path(checkpoint) if checkpoint else _latest_checkpoint(run)

    model = build_unet(
        cfg.model.preset,
        **{**cfg.model.overrides, "cross_attention_dim": encoder_info["dim"], "text_encoder": encoder_info["id"]},
    )
    _stage(f"reading {ckpt}")
    ema_used, step = _load_checkpoint_weights(model, ckpt, use_ema and cfg.optim.ema_decay > 0)
    _stage(f"loading the text encoder ({encoder_info.get('id')})")

    encoder = load_text_encoder(text_encoder or cfg.data.text_encoder or encoder_name(encoder_info))
    check_same_encoder(encoder_info, encoder.info, "the model's training embeddings")
    extra = {"preset": cfg.model.preset, "trained_steps": step, "checkpoint": ckpt.name, "ema": ema_used}
    return write_model_folder(out, model, encoder, cfg.diffusion, deg_cfg, extra)


def write_model_folder(
    out: str | Path,
    unet: Any,
    encoder: Any,
    diffusion: DiffusionConfig,
    degradation: DegradationConfig,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Write a model folder (module doc) from a denoiser and the text encoder it was trained with;
    `progress` shows the encoding of the prompt table on stderr."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet")
    sampling_scheduler("ddim", diffusion).save_pretrained(out / "scheduler")
    (out / "diffusion.json").write_text(json.dumps(dataclass_to_dict(diffusion), indent=2))
    (out / "encoder.json").write_text(json.dumps(encoder.info.to_dict(), indent=2))
    (out / "degradation.json").write_text(json.dumps(degradation.to_dict(), indent=2))
    prompts = table_prompts(degradation)
    table = {}
    with Progress(len(prompts), "export: encoding the prompt table", unit="prompt", enabled=progress) as bar:
        for i, p in enumerate(prompts):
            table[f"{i:04d}"] = torch.from_numpy(np.ascontiguousarray(encoder.encode(p)))
            bar.update(1)
    save_file(table, str(out / "embeddings.safetensors"))
    (out / "vocabulary.json").write_text(json.dumps({"phrases": vocabulary(degradation), "prompts": prompts}, indent=2))
    meta = {
        "format": FORMAT,
        "promptsr_version": __version__,
        "scale": degradation.scale,
        **(extra or {}),
        "encoder": encoder.info.to_dict(),
    }
    (out / "promptsr.json").write_text(json.dumps(meta, indent=2))
    return out


@dataclass
class PromptSRModel:
    """A loaded model folder: the denoiser, the schedule, and the prompt-embedding table."""

    folder: Path
    unet: Any
    diffusion: DiffusionConfig
    encoder: dict[str, Any]
    degradation: DegradationConfig
    meta: dict[str, Any]
    table: dict[str, np.ndarray]

    @property
    def scale(self) -> int:
        return int(self.meta["scale"])

    def lookup(self, prompt: str) -> np.ndarray | None:
        """The stored embedding of an in-vocabulary original-format prompt, else None."""
        return self.table.get(normalise_prompt(prompt))


def _diffusion_config(folder: Path) -> DiffusionConfig:
    """diffusion.json. A folder written before sampling clipped (no "clip" key) clips by default, and one
    written before prediction and target were settings loads as epsilon / image (their defaults, the
    paper's), each with a one-line notice."""
    data = _read_json(folder / "diffusion.json")
    if "clip" not in data:
        print(
            f"note: {folder} was exported before clip settings existed: sampling clips x0 to [-1, 1] "
            f"({DEFAULT_CLIP}); --no-clip turns it off",
            file=sys.stderr,
        )
    if "prediction" not in data or "target" not in data:
        print(
            f"note: {folder} records no prediction or target (exported before they were settings): "
            "loading it as an epsilon / image model, the paper's",
            file=sys.stderr,
        )
    try:
        cfg = DiffusionConfig(**data)
        if not isinstance(cfg.num_train_timesteps, int) or cfg.num_train_timesteps < 1:
            raise SrDegradeError(f"num_train_timesteps {cfg.num_train_timesteps!r} is not an integer >= 1")
        return cfg
    except (TypeError, SrDegradeError) as e:
        raise SrDegradeError(f"{folder / 'diffusion.json'}: {e}") from None


def _read_json(path: Path, kind: type = dict) -> Any:
    """A JSON file of the model folder, or one error line naming it and what is wrong."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SrDegradeError(f"{path} is missing: the model folder is incomplete (export it again)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SrDegradeError(f"{path} is not readable JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(data, kind):
        raise SrDegradeError(f"{path} must hold a JSON {kind.__name__}, not {type(data).__name__}")
    return data


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> PromptSRModel:
    """Load a folder written by `export_model`; one clear error line for anything else. Weights are
    read from safetensors only (never a pickle)."""
    from safetensors.torch import load_file

    from .unet import PromptSRUNet

    folder = Path(folder)
    meta_path = folder / "promptsr.json"
    if not meta_path.exists():
        raise SrDegradeError(
            f"{folder} is not a PromptSR model folder (no promptsr.json); make one with promptsr export"
        )
    meta = _read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise SrDegradeError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    scale = meta.get("scale")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise SrDegradeError(f"{meta_path}: scale {scale!r} is not a positive integer")
    try:
        unet = PromptSRUNet.from_pretrained(folder / "unet", use_safetensors=True).to(device).eval()
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise SrDegradeError(
            f"cannot load the denoiser from {folder / 'unet'}: {str(e).splitlines()[0][:160]}"
        ) from None
    prompts = _read_json(folder / "vocabulary.json").get("prompts")
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise SrDegradeError(f"{folder / 'vocabulary.json'}: 'prompts' must be a list of prompts")
    try:
        raw = load_file(str(folder / "embeddings.safetensors"))
        table = {normalise_prompt(p): raw[f"{i:04d}"].numpy() for i, p in enumerate(prompts)}
    except FileNotFoundError:
        raise SrDegradeError(f"{folder / 'embeddings.safetensors'} is missing: export the model again") from None
    except Exception as e:  # safetensors raises its own error type for damaged files
        raise SrDegradeError(
            f"{folder / 'embeddings.safetensors'} is unreadable or does not match vocabulary.json "
            f"({type(e).__name__}: {str(e).splitlines()[0][:80]})"
        ) from None
    try:
        degradation = DegradationConfig.from_dict(_read_json(folder / "degradation.json"))
    except SrDegradeError as e:
        raise SrDegradeError(f"{folder / 'degradation.json'}: {e}") from None
    return PromptSRModel(
        folder=folder,
        unet=unet,
        diffusion=_diffusion_config(folder),
        encoder=_read_json(folder / "encoder.json"),
        degradation=degradation,
        meta=meta,
        table=table,
    )


def copy_estimator(estimator: str | Path, model_dir: str | Path) -> Path:
    """Copy a degradation estimator into a model folder (as estimator/) for `--prompt auto`; one
    trained for another scale or vocabulary than the model is refused with both named."""
    import shutil

    from .estimator import check_compatible, load_estimator

    model_dir = Path(model_dir)
    est = load_estimator(estimator)
    degradation = DegradationConfig.from_dict(json.loads((model_dir / "degradation.json").read_text()))
    check_compatible(est, degradation.scale, degradation)
    target = model_dir / "estimator"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for name in ("estimator.json", "estimator.safetensors"):
        shutil.copy2(Path(estimator) / name, target / name)
    return target
