"""Evaluation as in the paper (section 4): PromptSR against bicubic, metric tables, and the ablations.

    from promptsr.evaluate import EvalOptions, MetricSet, evaluate, shard_items
    up = Upscaler("model/")
    result = evaluate(up, {"LSDIR-Val": shard_items("val_shards/")}, MetricSet(["psnr", "lpips"]), "results/")

Conventions:

- PSNR and SSIM are ours (`promptsr.metrics`: BT.601 Y, border of `scale` pixels cropped); every
  other metric comes from pyiqa (the optional extra `promptsr-model[eval]`), imported only when
  asked for. A metric pyiqa cannot create (not installed, weights not downloadable) is skipped with
  one note naming it and how to provide it; the others go on.
- Full-reference metrics (PSNR, SSIM, LPIPS, DISTS, ST-LPIPS) compare with the HR and are skipped
  where there is none (real-world LR folders such as Real45); no-reference ones (CNNIQA, NIMA,
  MUSIQ, NIQE) score the SR alone.
- The bicubic row is always computed on the same images with `bicubic_upsample`, the operator the
  model is conditioned on, rounded to uint8 like every saved image.
- Outputs in the output folder: per_image.csv, summary.md (Table 6 layout: one block per dataset,
  rows = methods, columns = metrics with arrows), summary.json, grids/ (LR | bicubic | ours | HR)
  and the SR images under images/<method>/<dataset>/ (metrics are those of these saved PNGs).

Ablations reuse `evaluate` once per setting (`run_ablation`): Table 1 (with vs empty prompt),
Table 3b (original vs shuffled vs simplified prompts), and a comparison of model folders trained
differently on the same shards (Tables 2, 3a, 5).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_degrade.errors import SrDegradeError
from sr_degrade.params import DegradationParams

from .bicubic import bicubic_uint8
from .metrics import psnr_y, ssim_y
from .options import SamplingOptions
from .prompts import read_prompt_table

__all__ = [
    "METRICS",
    "EvalItem",
    "EvalOptions",
    "EvalResult",
    "MetricSet",
    "evaluate",
    "folder_items",
    "parse_metrics",
    "run_ablation",
    "shard_items",
]

PIP_HINT = 'pip install "promptsr-model[eval]"'


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is computed and reported."""

    label: str  #: column title, as in the paper
    full_reference: bool  #: needs the HR
    lower_better: bool
    pyiqa: bool = True  #: False: ours (promptsr.metrics)


#: The metrics of the paper (Tables 1-7) plus MUSIQ and NIQE; keys are the names on the command line
#: and pyiqa's metric names.
METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec("PSNR", True, False, pyiqa=False),
    "ssim": MetricSpec("SSIM", True, False, pyiqa=False),
    "lpips": MetricSpec("LPIPS", True, True),
    "dists": MetricSpec("DISTS", True, True),
    "stlpips": MetricSpec("ST-LPIPS", True, True),
    "cnniqa": MetricSpec("CNNIQA", False, False),
    "nima": MetricSpec("NIMA", False, False),
    "musiq": MetricSpec("MUSIQ", False, False),
    "niqe": MetricSpec("NIQE", False, True),
}
DEFAULT_METRICS = "psnr,ssim,lpips,dists,stlpips,cnniqa,nima"


def parse_metrics(text: str) -> list[str]:
    """'psnr, LPIPS' -> ['psnr', 'lpips'] (order kept, duplicates dropped); unknown names raise with the list."""
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise SrDegradeError(f"unknown metric {', '.join(map(repr, unknown))}: known metrics are {', '.join(METRICS)}")
    if not names:
        raise SrDegradeError(f"no metric given: choose from {', '.join(METRICS)}")
    return names


def parse_weights(pairs: Sequence[str]) -> dict[str, Path]:
    """['lpips=/w/lpips.pth'] -> {'lpips': Path('/w/lpips.pth')}, each file checked to exist."""
    out: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        name = name.strip().lower()
        if not sep or name not in METRICS or not METRICS[name].pyiqa:
            raise SrDegradeError(f"--metric-weights {pair!r}: expected NAME=PATH with NAME a pyiqa metric")
        if not Path(path).is_file():
            raise SrDegradeError(f"--metric-weights {pair!r}: no file at {path}")
        out[name] = Path(path)
    return out


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    """H x W x 3 uint8 -> (1, 3, H, W) float in [0, 1], pyiqa's input."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255.0).to(device)


class MetricSet:
    """The requested metrics that can run here; the others are listed in `notes` with the fix."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        device: str = "cpu",
        weights: dict[str, Path] | None = None,
        has_reference: bool = True,
        crop_border: int = 4,
        factory: Callable[..., Any] | None = None,
    ):
        self.device = torch.device(device)
        self.crop_border = crop_border
        self.notes: list[str] = []
        self.names: list[str] = []
        self._pyiqa: dict[str, Any] = {}
        weights = weights or {}
        for name in names:
            spec = METRICS[name]
            if spec.full_reference and not has_reference:
                self.notes.append(f"{name}: skipped: a full-reference metric needs the HR images (use --data shards)")
                continue
            if spec.pyiqa:
                try:
                    self._pyiqa[name] = (factory or _create_pyiqa)(name, self.device, weights.get(name))
                except Exception as e:  # any failure (import, download, bad weights) skips this metric only
                    self.notes.append(_pyiqa_note(name, e))
                    continue
            self.names.append(name)

    def score(self, sr: np.ndarray, hr: np.ndarray | None) -> dict[str, float]:
        """Every available metric of one uint8 SR image (against the uint8 HR where needed)."""
        out: dict[str, float] = {}
        for name in self.names:
            if name == "psnr":
                out[name] = psnr_y(sr, hr, self.crop_border)
            elif name == "ssim":
                out[name] = ssim_y(sr, hr, self.crop_border)
            else:
                metric = self._pyiqa[name]
                with torch.no_grad():
                    args = [_to_tensor(sr, self.device)]
                    if METRICS[name].full_reference:
                        args.append(_to_tensor(hr, self.device))
                    out[name] = float(torch.as_tensor(metric(*args)).float().mean())
        return out


def _create_pyiqa(name: str, device: torch.device, weights: Path | None) -> Any:
    import pyiqa  # optional extra: imported only when a perceptual metric is asked for

    kwargs = {"pretrained_model_path": str(weights)} if weights else {}
    return pyiqa.create_metric(name, device=device, **kwargs)


def _pyiqa_note(name: str, error: Exception) -> str:
    if isinstance(error, ImportError) and "pyiqa" in str(error):
        why = f"pyiqa is not installed; install it with: {PIP_HINT}"
    else:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        why = (
            f"pyiqa could not create it ({reason}); its weights download at first use: run once with "
            f"internet, put the file in pyiqa's cache (~/.cache/torch/hub/pyiqa), or pass "
            f"--metric-weights {name}=PATH"
        )
    return f"{name}: skipped: {why}"


@dataclass
class EvalItem:
    """One image to evaluate: LR, HR (None for real-world LR), the prompt and, for shards, the params."""

    key: str
    lr: np.ndarray | None
    hr: np.ndarray | None
    prompt: str
    params: DegradationParams | None = None
    error: str | None = None  #: set when the image could not be read: reported, not evaluated


@dataclass(frozen=True)
class EvalOptions(SamplingOptions):
    """The sampling options (`promptsr.options.SamplingOptions`) and how prompts are chosen; recorded in
    summary.json."""

    #: original (as stored) / shuffled / simplified / empty, or estimated (the degradation estimator's)
    prompt_format: str = "original"
    free_text: bool = False
    grids: bool = True
    save_images: bool = True
    estimator: str | None = None  #: estimator folder for prompt_format "estimated"; None: the model folder's


@dataclass
class EvalResult:
    """Rows of per_image.csv, the means per dataset and method, the failures and the metric notes."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    means: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def shard_items(folder: str | Path, limit: int | None = None) -> Iterator[EvalItem]:
    """Samples of evaluation shards, in shard order; a sample that does not decode becomes an error item.

    Decoding happens here rather than in `open_shards` so that one bad sample does not end the pass.
    """
    from sr_degrade.shards import decode_sample, raw_samples

    for i, raw in enumerate(raw_samples(folder)):
        if limit is not None and i >= limit:
            return
        try:
            s = decode_sample(raw)
        except SrDegradeError as e:
            yield EvalItem(raw.get("__key__", f"sample{i}"), None, None, "", error=str(e))
            continue
        yield EvalItem(s.key, s.lr, s.hr, s.prompt, s.params)


def _image_files(folder: str | Path) -> list[Path]:
    from sr_degrade.imageio import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise SrDegradeError(f"--lr-folder {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SrDegradeError(f"--lr-folder {folder}: no images found")
    return files


def folder_items(
    folder: str | Path, prompts: dict[str, str] | None = None, limit: int | None = None
) -> Iterator[EvalItem]:
    """LR images of a folder (no HR: real-world sets such as Real45); prompts by file name or stem, else empty."""
    from sr_degrade.imageio import read_image

    folder = Path(folder)
    files = _image_files(folder)
    prompts = prompts or {}
    for f in files[:limit]:
        key = f.relative_to(folder).with_suffix("").as_posix()
        text = prompts.get(f.name, prompts.get(f.stem, ""))
        try:
            yield EvalItem(key, read_image(f), None, text)
        except SrDegradeError as e:
            yield EvalItem(key, None, None, text, error=str(e))


def check_data_scale(data: Sequence[str | Path], scale: int) -> None:
    """An SrDegradeError before the first image when evaluation shards were built for another scale
    than the model's (read from their build.json; shards without one are checked image by image)."""
    from .train_data import shard_build_info

    for folder in data:
        built = shard_build_info(str(folder)).get("config", {}).get("scale")
        if built is not None and int(built) != scale:
            raise SrDegradeError(
                f"{folder} holds x{built} shards but the model upscales x{scale}: evaluate it on x{scale} shards"
            )


def dataset_loader(
    data: Sequence[str | Path],
    names: Sequence[str] = (),
    lr_folder: str | Path | None = None,
    prompts: str | Path | None = None,
    limit: int | None = None,
) -> tuple[Callable[[], dict[str, Iterable[EvalItem]]], bool, int | None]:
    """Checks the inputs now and returns (a factory of fresh dataset iterators, has HR, image count or None).

    `data`: evaluation shard folders (one summary block each, named by `names` or the folder name);
    `lr_folder` (+ `prompts` CSV): one real-world LR set without HR instead.
    """
    from sr_degrade.shards import read_index, shard_files

    if bool(data) == bool(lr_folder):
        raise SrDegradeError("give either --data (evaluation shards) or --lr-folder (LR images without HR)")
    if names and len(names) != (len(data) if data else 1):
        raise SrDegradeError(f"--name given {len(names)} times for {len(data) or 1} dataset(s)")
    if lr_folder:
        table = read_prompt_table(prompts) if prompts else {}
        name = names[0] if names else Path(lr_folder).name
        files = _image_files(lr_folder)  # raises now for a missing or empty folder
        n = min(len(files), limit) if limit is not None else len(files)
        return (lambda: {name: folder_items(lr_folder, table, limit)}), False, n
    from sr_degrade.storage import is_url

    folders = [d if is_url(d) else Path(d) for d in data]  # a URL stays text: Path() would fold its "//"
    total = 0
    for d in folders:
        shard_files(d)  # raises now when there are no shards
        try:
            rows = len(read_index(d))
        except Exception:  # no index (shards copied alone): no ETA, still evaluated
            total = None
        else:
            total = None if total is None else total + (min(rows, limit) if limit is not None else rows)
    labels = list(names) or [dataset_label(d) for d in folders]
    if len(set(labels)) != len(labels):
        raise SrDegradeError(f"two datasets share a name ({', '.join(labels)}): name them with --name")
    return (lambda: {lab: shard_items(d, limit) for lab, d in zip(labels, folders)}), True, total


def dataset_label(data: str | Path) -> str:
    """The default name of a dataset: its folder's name (the last part of a URL: s3://b/sets/urban100 ->
    urban100)."""
    text = str(data).rstrip("/")
    name = text.rsplit("/", 1)[-1] if "://" in text else Path(text).name
    return name or text


def _prompt_for(item: EvalItem, fmt: str, seed: int, index: int, cfg: Any, estimate: Callable | None = None) -> str:
    """The item's prompt in format `fmt`, re-rendered from its params (deterministic per (seed, image)),
    or written from its LR by the degradation estimator (`estimate`, for "estimated")."""
    if fmt == "original":
        return item.prompt
    if fmt == "empty":
        return ""
    if fmt == ESTIMATED:
        return estimate(item.lr)
    if item.params is None:
        raise SrDegradeError(f"prompt format {fmt!r} needs the degradation parameters (evaluation shards)")
    from sr_degrade.text import describe

    return describe(item.params, fmt, np.random.default_rng([seed, index]), cfg)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


#: The prompt format whose prompts the degradation estimator writes from each LR image.
ESTIMATED = "estimated"


def _understood(text: str, cfg: Any, mapped: dict[str, str], notes: list[str]) -> str:
    """A free-text prompt as `promptsr upscale --free-text` reads it (mapped onto the vocabulary where it
    can be, else as written); each distinct prompt told once in the summary's notes."""
    if text not in mapped:
        from .prompts import understood

        resolved = understood(text, cfg, omission=True)
        mapped[text] = resolved.text
        if resolved.text != text:
            notes.append(f"free-text prompt {text!r} understood as: {resolved.text}")
        if resolved.unknown:
            notes.append(f"free-text prompt {text!r}: not understood: {', '.join(resolved.unknown)}")
    return mapped[text]


def prompt_estimator(upscaler: Any, opts: EvalOptions) -> Callable[[np.ndarray], str] | None:
    """For prompt_format "estimated": LR -> the estimator's canonical prompt (the estimator of
    `opts.estimator`, else the model folder's estimator/), checked against the model; else None."""
    if opts.prompt_format != ESTIMATED:
        return None
    from .estimator import omits_ops
    from .prompts import find_estimator, open_estimator

    model_dir = Path(getattr(upscaler.model, "folder", "."))
    folder = find_estimator(Path(opts.estimator) if opts.estimator else None, model_dir)
    if folder is None:
        asked = Path(opts.estimator) if opts.estimator else model_dir / "estimator"
        raise SrDegradeError(
            f"--prompt-format estimated needs a degradation estimator: {asked} is none; pass --estimator DIR or "
            "copy one into the model folder with `promptsr export --estimator DIR`"
        )
    est = open_estimator(folder, upscaler.scale, upscaler.model.degradation)
    omission = omits_ops(upscaler.model.degradation)
    return lambda lr: est.prompt(lr, omission=omission)[0]


def check_options(upscaler: Any, opts: EvalOptions) -> None:
    """Settings errors raise here, before any image, rather than failing every image one by one."""
    from sr_degrade.text import PROMPT_FORMATS

    if opts.prompt_format not in (*PROMPT_FORMATS, ESTIMATED):
        known = [*PROMPT_FORMATS, ESTIMATED]
        raise SrDegradeError(f"unknown --prompt-format {opts.prompt_format!r}: choose one of {known}")
    try:
        opts.check_inputs()
    except ValueError as e:
        raise SrDegradeError(str(e)) from None
    upscaler.check_settings(**opts.model_checks())


def evaluate(
    upscaler: Any,
    datasets: dict[str, Iterable[EvalItem]],
    metrics: MetricSet,
    out: str | Path,
    options: EvalOptions | None = None,
    *,
    method: str = "promptsr",
    total: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Upscale every item, score it and its bicubic baseline, write the outputs to `out`.

    `datasets`: name -> items (a block of the summary each). An item that cannot be read or upscaled
    is listed in `result.failures`; the others still run.
    """
    from sr_degrade.imageio import write_image
    from sr_degrade.progress import Progress
    from sr_degrade.sheet import contact_sheet

    opts = options or EvalOptions()
    check_options(upscaler, opts)
    estimate = prompt_estimator(upscaler, opts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = EvalResult(metrics=list(metrics.names), notes=list(metrics.notes))
    scale = upscaler.scale
    mapped: dict[str, str] = {}  #: a free-text prompt -> what the model reads (--free-text)
    bar = Progress(total, "eval", unit="img", enabled=progress)
    for dataset, items in datasets.items():
        sums: dict[str, dict[str, list[float]]] = {method: {}, "bicubic": {}}
        count = 0
        for index, item in enumerate(items):
            where = f"{dataset}/{item.key}"
            try:
                if item.error:
                    raise SrDegradeError(item.error)
                prompt = _prompt_for(item, opts.prompt_format, opts.seed, index, upscaler.model.degradation, estimate)
                if opts.free_text and prompt:
                    prompt = _understood(prompt, upscaler.model.degradation, mapped, result.notes)
                bicubic = bicubic_uint8(item.lr, scale)
                sr = upscaler.upscale(
                    item.lr, prompt, steps=opts.steps, scheduler=opts.scheduler, seed=opts.seed, tile=opts.tile,
                    overlap=opts.overlap, batch=opts.batch, color=opts.color, free_text=opts.free_text,
                    clip=opts.clip, strength=opts.strength,
                    callback=lambda i, n, key=item.key: bar.update(0, extra=f"{key}: step {i}/{n}"),
                )  # fmt: skip
                if item.hr is not None and item.hr.shape != sr.shape:
                    raise SrDegradeError(f"HR {item.hr.shape} is not {scale} x the LR {item.lr.shape}")
                scores = {method: metrics.score(sr, item.hr), "bicubic": metrics.score(bicubic, item.hr)}
            except (SrDegradeError, OSError, ValueError) as e:
                result.failures.append(str(e) if item.key in str(e) else f"{where}: {e}")
                bar.update(1, extra=f"{len(result.failures)} failed")
                continue
            for name, img in ((method, sr), ("bicubic", bicubic)):
                row = {"dataset": dataset, "image": item.key, "method": name, "prompt": prompt}
                row.update(scores[name])
                result.rows.append(row)
                for k, v in scores[name].items():
                    sums[name].setdefault(k, []).append(v)
                if opts.save_images:
                    write_image(out / "images" / name / _safe(dataset) / f"{_safe(item.key)}.png", img)
            if opts.grids:
                panels = [item.lr, bicubic, sr] + ([item.hr] if item.hr is not None else [])
                caption = f"{item.key}: [{prompt}] " + " ".join(
                    f"{METRICS[k].label} {scores['bicubic'][k]:.4g} -> {v:.4g}" for k, v in scores[method].items()
                )
                header = ["LR", "bicubic", method] + (["HR"] if item.hr is not None else [])
                sheet = contact_sheet([(panels, caption)], cell=192, text_width=320, header=header)
                write_image(out / "grids" / _safe(dataset) / f"{_safe(item.key)}.png", sheet)
            count += 1
            bar.update(1, extra=f"{len(result.failures)} failed" if result.failures else None)
        result.counts[dataset] = count
        # Bicubic first, as in the paper's tables.
        result.means[dataset] = {m: {k: _mean(v) for k, v in sums[m].items()} for m in ("bicubic", method)}
    bar.close()
    model_folder = str(getattr(upscaler.model, "folder", ""))
    write_outputs(result, out, {"method": method, "model": model_folder, "scale": scale, "options": asdict(opts)})
    return result


def _mean(values: list[float]) -> float:
    """Mean over images; NaN when there are none."""
    return float(np.mean(values)) if values else math.nan


def _arrow(name: str) -> str:
    return "↓" if METRICS[name].lower_better else "↑"


def _fmt(value: float, name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if name == "psnr" else f"{value:.4f}"


def table_markdown(
    blocks: dict[str, dict[str, dict[str, float]]],
    metrics: Sequence[str],
    counts: dict[str, int],
    first: str = "Method",
) -> str:
    """One markdown table per dataset: rows = methods or settings, columns = metrics with ↑/↓."""
    lines: list[str] = []
    for dataset, rows in blocks.items():
        lines += [f"### {dataset} ({counts.get(dataset, 0)} images)", ""]
        lines.append("| " + " | ".join([first] + [f"{METRICS[m].label} {_arrow(m)}" for m in metrics]) + " |")
        lines.append("|" + "---|" * (len(metrics) + 1))
        for label, means in rows.items():
            cells = [_display(label)] + [_fmt(means.get(m, math.nan), m) for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _display(label: str) -> str:
    return {"bicubic": "Bicubic", "promptsr": "PromptSR"}.get(label, label)


def _notes_markdown(result: EvalResult) -> str:
    lines = [f"- {n}" for n in result.notes]
    if result.failures:
        lines += [f"- {len(result.failures)} image(s) failed:"] + [f"  - {f}" for f in result.failures]
    return ("\n**Notes**\n\n" + "\n".join(lines) + "\n") if lines else ""


def write_outputs(result: EvalResult, out: Path, extra: dict[str, Any]) -> None:
    """per_image.csv, summary.md and summary.json of one evaluation."""
    columns = ["dataset", "image", "method", "prompt", *result.metrics]
    with open(out / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    body = table_markdown(result.means, result.metrics, result.counts)
    (out / "summary.md").write_text(f"# Evaluation (x{extra.get('scale', 4)})\n\n{body}{_notes_markdown(result)}")
    record = {
        **extra,
        "metrics": result.metrics,
        "lower_better": {m: METRICS[m].lower_better for m in result.metrics},
        "datasets": {d: {"images": result.counts.get(d, 0), "means": m} for d, m in result.means.items()},
        "notes": result.notes,
        "failures": result.failures,
    }
    (out / "summary.json").write_text(json.dumps(record, indent=2, allow_nan=True) + "\n")


#: The ablation studies: name -> (settings as (label, prompt format)), or None for the model comparison.
STUDIES: dict[str, list[tuple[str, str]] | None] = {
    "prompt": [("with prompt", "original"), ("without prompt", "empty")],  # Table 1
    "format": [("original", "original"), ("shuffled", "shuffled"), ("simplified", "simplified")],  # Table 3b
    "models": None,  # Tables 2, 3a, 5: one setting per model folder
}


def run_ablation(
    study: str,
    upscalers: dict[str, Callable[[], Any]],
    datasets: Callable[[], dict[str, Iterable[EvalItem]]],
    metrics: MetricSet,
    out: str | Path,
    options: EvalOptions | None = None,
    *,
    total: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], list[EvalResult]]:
    """Evaluate each setting of `study` into out/<setting>/ and write out/ablation_<study>.md and .json.

    `upscalers`: label -> a loader (one model for "prompt"/"format", one per folder for "models");
    `datasets`: a fresh iterator of the data for each setting. The bicubic row comes from the first setting.
    """
    if study not in STUDIES:
        raise SrDegradeError(f"unknown ablation {study!r}: choose one of {', '.join(STUDIES)}")
    base = options or EvalOptions()
    out = Path(out)
    if STUDIES[study] is None:
        settings = [(label, loader, base.prompt_format) for label, loader in upscalers.items()]
    else:
        (loader,) = upscalers.values()
        settings = [(label, loader, fmt) for label, fmt in STUDIES[study]]
    blocks: dict[str, dict[str, dict[str, float]]] = {}
    results: list[EvalResult] = []
    loaded: dict[int, Any] = {}
    for label, loader, fmt in settings:
        if id(loader) not in loaded:  # one load per model for the whole run, not one per setting
            loaded[id(loader)] = loader()
        up = loaded[id(loader)]
        opts = EvalOptions(**{**asdict(base), "prompt_format": fmt})
        res = evaluate(up, datasets(), metrics, out / _safe(label), opts, total=total, progress=progress)
        results.append(res)
        for dataset, means in res.means.items():
            rows = blocks.setdefault(dataset, {})
            rows.setdefault("Bicubic", means["bicubic"])
            rows[label] = means["promptsr"]
    counts = results[0].counts if results else {}
    titles = {
        "prompt": "Table 1: with vs without (empty) prompt",
        "format": "Table 3b: prompt format",
        "models": "Model comparison (Tables 2, 3a, 5)",
    }
    first = "Model" if study == "models" else "Setting"
    body = table_markdown(blocks, metrics.names, counts, first=first)
    failures = list(dict.fromkeys(f for r in results for f in r.failures))  # the same bad image fails each setting
    notes = [f"- {n}" for n in metrics.notes] + [f"- {f}" for f in failures]
    text = f"# {titles[study]}\n\n{body}" + ("\n**Notes**\n\n" + "\n".join(notes) + "\n" if notes else "")
    (out / f"ablation_{study}.md").write_text(text)
    record = {
        "study": study,
        "settings": [label for label, _, _ in settings],
        "metrics": metrics.names,
        "lower_better": {m: METRICS[m].lower_better for m in metrics.names},
        "datasets": {d: {"images": counts.get(d, 0), "rows": rows} for d, rows in blocks.items()},
        "options": asdict(base),
        "notes": metrics.notes,
        "failures": failures,
    }
    (out / f"ablation_{study}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record, results
