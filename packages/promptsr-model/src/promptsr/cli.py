"""The promptsr command line: parses arguments and calls the library (no model logic here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
import typer.core

from sr_degrade.cli_errors import error_exit, friendly

from ._version import __version__

app = typer.Typer(
    name="promptsr",
    help="PromptSR: text-prompt diffusion super-resolution: train, export, upscale, compare, evaluate, ablate.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> NoReturn:
    """The error contract (shared with sr-degrade, `sr_degrade.cli_errors`): one `error:` line on stderr
    and exit status 2."""
    raise error_exit(message)


@app.command("version")
@friendly
def version() -> None:
    """Print the versions of promptsr and the sr-degrade it uses."""
    import sr_degrade

    typer.echo(f"promptsr {__version__} (sr-degrade {sr_degrade.__version__})")


@app.command("info")
@friendly
def info(
    preset: Annotated[str, typer.Option("--preset", help="Denoiser preset: promptsr_x4 (the paper's) or tiny.")] = (
        "promptsr_x4"
    ),
) -> None:
    """Print a denoiser preset's parameter count and full config."""
    from .presets import PRESETS

    if preset not in PRESETS:  # before torch and diffusers load: a refusal in a fraction of a second
        fail(f"unknown preset {preset!r}; choose from: {', '.join(sorted(PRESETS))}")
    import torch

    from .unet import build_unet, count_parameters

    try:
        # Built on the meta device: the count and config need no memory or initialisation time.
        with torch.device("meta"):
            model = build_unet(preset)
    except ValueError as e:
        fail(str(e))
    n = count_parameters(model)
    typer.echo(f"preset: {preset}")
    typer.echo(f"parameters: {n:,} ({n / 1e6:.1f}M)")
    typer.echo(f"input size multiple: {model.size_multiple}")
    typer.echo("config:")
    for key, value in model.config.items():
        if not key.startswith("_"):
            typer.echo(f"  {key}: {value}")


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@friendly
def train(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML training config.")] = None,
) -> None:
    """Train in this process (for several GPUs or ranks: accelerate launch packages/promptsr-model/train.py).

    Extra arguments are key=value overrides, e.g. optim.lr=1e-4 run.output_dir=runs/a.
    """
    from .train_cli import main as train_main

    argv = (["--config", str(config)] if config else []) + list(ctx.args)
    raise typer.Exit(train_main(argv))


@app.command("export")
@friendly
def export(
    run_dir: Annotated[Path, typer.Argument(help="A training run's output_dir.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")],
    checkpoint: Annotated[
        Optional[Path], typer.Option("--checkpoint", help="A checkpoint folder (default: the run's latest).")
    ] = None,
    no_ema: Annotated[
        bool, typer.Option("--no-ema", help="Export the raw weights even when the run has an EMA.")
    ] = False,
    text_encoder: Annotated[
        Optional[str], typer.Option("--text-encoder", help="Where to load the run's encoder from (name or folder).")
    ] = None,
    estimator: Annotated[
        Optional[Path],
        typer.Option("--estimator", help="Copy this degradation estimator into the model folder (--prompt auto)."),
    ] = None,
) -> None:
    """Write a self-contained model folder: weights, schedule, encoder record, prompt-embedding table."""
    from sr_degrade.errors import SrDegradeError

    if estimator is not None and not (estimator / "estimator.json").is_file():
        fail(f"--estimator {estimator} is not an estimator folder (no estimator.json)")
    for path, what in ((run_dir / "config.yaml", "a training run's output_dir"), (checkpoint, "a checkpoint folder")):
        if path is not None and not path.exists():  # before torch loads: refused at once
            typer.echo(
                f"error: {path.parent if path.name == 'config.yaml' else path} is not {what} ({path} is missing)",
                err=True,
            )
            raise typer.Exit(2)
    from .export import export_model

    try:
        folder = export_model(run_dir, output, checkpoint=checkpoint, use_ema=not no_ema, text_encoder=text_encoder)
        if estimator is not None:
            from .export import copy_estimator

            copy_estimator(estimator, folder)
    except SrDegradeError as e:
        fail(str(e))
    typer.echo(f"wrote {folder}")


_Clip = Annotated[
    Optional[str],
    typer.Option(
        "--clip",
        help="How sampling clips its x0 estimate: recompute (guided-diffusion), clamp (DDIM clip_sample) "
        "or none; default: the model's setting.",
    ),
]
_NoClip = Annotated[bool, typer.Option("--no-clip", help="No clipping of the x0 estimate (same as --clip none).")]
_Strength = Annotated[
    float,
    typer.Option(
        help="1: start from pure noise (the paper's sampling); below 1: start from the bicubic image noised to "
        "strength x T and run that share of the steps.",
    ),
]
_Steps = Annotated[int, typer.Option(help="Sampling steps.")]
_Scheduler = Annotated[str, typer.Option(help="ddim, dpm-solver++, euler, unipc or a diffusers class.")]
_Dtype = Annotated[str, typer.Option(help="float32 or bfloat16.")]
_Batch = Annotated[int, typer.Option(help="Tiles per forward pass.")]
_Tile = Annotated[int, typer.Option(help="Tile side in HR pixels (memory is bounded by it).")]
_Overlap = Annotated[int, typer.Option(help="Overlap of neighbouring tiles in HR pixels.")]
_ColorFix = Annotated[str, typer.Option("--color-fix", help="none, adain or wavelet.")]
_FreeText = Annotated[
    bool,
    typer.Option(
        "--free-text",
        help="A prompt in your own words: mapped onto the vocabulary where it can be (printed as "
        "'understood as: ...'), else passed to the text encoder.",
    ),
]
_Compile = Annotated[
    str,
    typer.Option(
        "--compile",
        help="off, on (= inductor) or a torch.compile backend name; compiling costs time once per tile shape.",
    ),
]
_Tf32 = Annotated[
    Optional[bool], typer.Option("--tf32/--no-tf32", help="TF32 matmuls/convolutions (default: on for CUDA).")
]
_ChannelsLast = Annotated[
    Optional[bool], typer.Option("--channels-last/--no-channels-last", help="NHWC weights (default: on for CUDA).")
]
_DeviceShare = Annotated[
    float,
    typer.Option(
        "--device-share",
        help="Share of the GPU's memory the whole-image state may take; larger images keep it on the host.",
    ),
]
_UpscalePrompt = Annotated[
    Optional[str], typer.Option("--prompt", "-p", help='Degradation prompt, e.g. "light blur, downsample".')
]
_PromptTable = Annotated[
    Optional[Path], typer.Option("--prompts", help="CSV of image,prompt rows (per-image prompts).")
]
_AutoEstimator = Annotated[
    Optional[Path],
    typer.Option("--estimator", help="Degradation estimator for --prompt auto (default: the model folder's)."),
]


def _sampling(steps, scheduler, seed, tile, overlap, batch, color, clip, no_clip, strength):
    """The sampling options of a command, checked (exit 2 with one line for a bad value)."""
    from .options import SamplingOptions, clip_choice

    try:
        return SamplingOptions(
            steps, scheduler, seed, tile, overlap, batch, color, clip_choice(clip, no_clip), strength
        ).check_inputs()
    except ValueError as e:
        fail(str(e))


@app.command("upscale")
@friendly
def upscale(
    inputs: Annotated[list[Path], typer.Argument(help="LR images, or folders of them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output image (one input) or folder.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="A model folder written by promptsr export.")],
    prompt: _UpscalePrompt = None,
    prompts: _PromptTable = None,
    free_text: _FreeText = False,
    estimator: _AutoEstimator = None,
    steps: _Steps = 50,
    scheduler: _Scheduler = "ddim",
    seed: Annotated[int, typer.Option(help="Seed of the initial noise.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: _Dtype = "float32",
    batch: _Batch = 4,
    tile: _Tile = 512,
    overlap: _Overlap = 64,
    color_fix: _ColorFix = "none",
    clip: _Clip = None,
    no_clip: _NoClip = False,
    strength: _Strength = 1.0,
    compile: _Compile = "off",
    tf32: _Tf32 = None,
    channels_last: _ChannelsLast = None,
    device_share: _DeviceShare = 0.25,
) -> None:
    """Upscale images with a prompt: output exactly scale x the input, any size (tiles blended every step).

    Per-image prompts come from --prompts CSV or a sidecar IMAGE.txt next to the image; otherwise --prompt;
    without any, the empty prompt. In-vocabulary prompts use the model's embedding table. The prompt
    "auto" is written per image by the degradation estimator (the model folder's, or --estimator).
    """
    from sr_degrade.errors import SrDegradeError

    from . import prompts as rules
    from .jobs import input_files, upscale_files

    try:  # everything checkable without the model first: a bad argument is refused before torch loads
        files = input_files(inputs)
        opts = _sampling(steps, scheduler, seed, tile, overlap, batch, color_fix, clip, no_clip, strength)
        if prompt and not free_text and not rules.is_auto(prompt):
            rules.check_vocabulary(prompt, model)
    except (SrDegradeError, OSError, ValueError) as e:
        fail(str(e))
    use_estimator = estimator is not None or rules.needs_estimator(files, prompt, prompts)
    est_dir = rules.find_estimator(estimator, model)
    if use_estimator and est_dir is None:
        fail(rules.NO_ESTIMATOR.format(model=model))
    try:
        table = rules.read_prompt_table(prompts) if prompts else {}
        from .inference import Upscaler

        up = Upscaler(
            model, device=device, dtype=dtype, compile=compile, device_share=device_share,
            tf32="auto" if tf32 is None else tf32, channels_last="auto" if channels_last is None else channels_last,
        )  # fmt: skip
        up.check_settings(**opts.model_checks())
        est = rules.open_estimator(est_dir, up.scale, up.model.degradation) if use_estimator else None
    except (SrDegradeError, OSError, ValueError) as e:
        fail(str(e))
    from .estimator import omits_ops

    source = rules.PromptSource(
        prompt=prompt, table=table, free_text=free_text, estimator=est, degradation=up.model.degradation,
        omission=omits_ops(up.model.degradation),
    )  # fmt: skip
    if not source.any_given(files):
        typer.echo("note: no prompt given: using the empty prompt (the model's 'without prompt' setting)", err=True)
    to_folder = len(files) > 1 or any(i.is_dir() for i in inputs) or output.suffix == ""
    failures = upscale_files(
        up, files, output, source, opts, to_folder=to_folder, say=typer.echo,
        note=lambda m: typer.echo(f"note: {m}", err=True), error=lambda m: typer.echo(f"error: {m}", err=True),
    )  # fmt: skip
    _report_upscaled(len(files), failures, up.scale, output)


def _report_upscaled(total: int, failures: list[str], scale: int, output: Path) -> None:
    """The last line and the exit status: 2 when nothing was upscaled, 1 when some images failed."""
    done = total - len(failures)
    if done == 0:
        raise typer.Exit(2)  # every failure is already on its own error: line
    typer.echo(f"upscaled {done} of {total} images x{scale} -> {output}")
    if failures:
        typer.echo(f"{len(failures)} of {total} failed (listed above)", err=True)
        raise typer.Exit(1)


@app.command("compare")
@friendly
def compare_cmd(
    sr: Annotated[Path, typer.Argument(help="The upscaled image (promptsr upscale's output).")],
    lr: Annotated[Path, typer.Option("--lr", help="The LR image it was upscaled from.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Side-by-side image to write (PNG).")],
    hr: Annotated[Optional[Path], typer.Option("--hr", help="The true HR image: adds a column and the scores.")] = None,
    bicubic: Annotated[
        Optional[Path], typer.Option("--bicubic", help="Also write the bicubic upscale of the LR here.")
    ] = None,
    width: Annotated[int, typer.Option(help="Scale each column to this width (0: full resolution).")] = 0,
    crop: Annotated[
        Optional[str], typer.Option(help="Show only this region X,Y,W,H (HR pixels); scores stay whole-image.")
    ] = None,
) -> None:
    """Bicubic | PromptSR | HR side by side, with PSNR-Y / SSIM-Y under each when the HR is given."""
    from sr_degrade.errors import SrDegradeError
    from sr_degrade.imageio import read_image, write_image

    from .compare import compare

    try:
        box = None
        if crop is not None:
            try:
                box = tuple(int(v) for v in crop.split(","))
            except ValueError:
                box = ()
            if len(box) != 4:
                raise SrDegradeError(f"--crop {crop!r}: expected X,Y,W,H in HR pixels, e.g. 100,80,256,192")
        images = [read_image(p) for p in (lr, sr)] + ([read_image(hr)] if hr else [])
        bic, sheet, scores = compare(*images, width=width, crop=box)
        write_image(output, sheet)
        if bicubic:
            write_image(bicubic, bic)
    except (SrDegradeError, OSError) as e:
        fail(str(e))
    for name, s in scores.items():
        typer.echo(f"{name:9s} PSNR-Y {s['psnr']:6.2f} dB  SSIM-Y {s['ssim']:.4f}")
    typer.echo(f"wrote {output}" + (f" and {bicubic}" if bicubic else ""))


_EVAL_EXIT = "Exit codes: 0 done; 1 some images failed (listed at the end, the others evaluated); 2 bad input."


def _eval_common(
    model: Path,
    data: list[str],
    names: list[str],
    lr_folder: Optional[Path],
    prompts: Optional[Path],
    metrics: str,
    metric_weights: list[str],
    limit: Optional[int],
    device: str,
    dtype: str,
):
    """Checks everything an eval or ablation needs before any upscaling; exit 2 with one line otherwise."""
    from sr_degrade.errors import SrDegradeError

    from .evaluate import MetricSet, check_data_scale, dataset_loader, parse_metrics, parse_weights
    from .inference import Upscaler

    try:
        names_m = parse_metrics(metrics)
        weights = parse_weights(metric_weights)
        loader, has_hr, total = dataset_loader(data, names, lr_folder, prompts, limit)
        up = Upscaler(model, device=device, dtype=dtype)
        check_data_scale(data, up.scale)
    except (SrDegradeError, OSError) as e:
        fail(str(e))
    metric_set = MetricSet(names_m, device=device, weights=weights, has_reference=has_hr, crop_border=up.scale)
    for note in metric_set.notes:
        typer.echo(f"note: {note}", err=True)
    return up, loader, metric_set, total


def _finish(failures: list[str], out: Path, written: str) -> None:
    typer.echo(f"wrote {written} in {out}")
    if failures:
        typer.echo(f"{len(failures)} image(s) failed:", err=True)
        for line in failures:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1)


_Model = Annotated[Path, typer.Option("--model", "-m", help="A model folder written by promptsr export.")]
_Data = Annotated[
    list[str],  # text, not Path: an s3:// or http(s):// URL must keep its "//"
    typer.Option(
        "--data", help="Evaluation shards (sr-degrade build --val), a folder or a URL; repeat for several sets."
    ),
]
_Names = Annotated[list[str], typer.Option("--name", help="Dataset name per --data (default: the folder name).")]
_LrFolder = Annotated[
    Optional[Path], typer.Option("--lr-folder", help="LR images without HR (e.g. Real45): no-reference metrics.")
]
_Prompts = Annotated[Optional[Path], typer.Option("--prompts", help="CSV image,prompt for --lr-folder.")]
_Metrics = Annotated[str, typer.Option(help="Comma list: psnr,ssim,lpips,dists,stlpips,cnniqa,nima,musiq,niqe.")]
_Weights = Annotated[
    list[str], typer.Option("--metric-weights", help="NAME=PATH: a pyiqa metric's weights file (offline).")
]
_Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
_Limit = Annotated[Optional[int], typer.Option(help="At most this many images per dataset.")]


@app.command("eval", epilog=_EVAL_EXIT)
@friendly
def eval_cmd(
    model: _Model,
    out: _Out,
    data: _Data = [],  # noqa: B006 (typer reads the default, never mutates it)
    name: _Names = [],  # noqa: B006
    lr_folder: _LrFolder = None,
    prompts: _Prompts = None,
    metrics: _Metrics = "psnr,ssim,lpips,dists,stlpips,cnniqa,nima",
    metric_weights: _Weights = [],  # noqa: B006
    prompt_format: Annotated[
        str,
        typer.Option(
            help="original (as stored), shuffled, simplified, empty (no prompt) or estimated (the degradation "
            "estimator's, from each LR)."
        ),
    ] = "original",
    estimator: Annotated[
        Optional[Path],
        typer.Option("--estimator", help="Estimator for --prompt-format estimated (default: the model folder's)."),
    ] = None,
    limit: _Limit = None,
    steps: _Steps = 50,
    scheduler: _Scheduler = "ddim",
    seed: Annotated[int, typer.Option(help="Seed of the initial noise (and of re-rendered prompts).")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, ... (the model and the pyiqa metrics).")] = "cpu",
    dtype: _Dtype = "float32",
    tile: _Tile = 512,
    overlap: _Overlap = 64,
    batch: _Batch = 4,
    color_fix: _ColorFix = "none",
    free_text: _FreeText = False,
    grids: Annotated[bool, typer.Option("--grids/--no-grids", help="Write grids/ (LR | bicubic | ours | HR).")] = True,
    save_images: Annotated[bool, typer.Option("--save-images/--no-save-images", help="Write images/.")] = True,
    clip: _Clip = None,
    no_clip: _NoClip = False,
    strength: _Strength = 1.0,
) -> None:
    """Evaluate a model against bicubic on whole images: per_image.csv, summary.md (Table 6 layout), summary.json.

    With --data: evaluation shards (LR, HR, prompt); all metrics. With --lr-folder (and --prompts
    CSV of image,prompt; missing prompts are empty): real-world LR without HR, no-reference metrics
    only. PSNR/SSIM are ours (BT.601 Y, border = scale); the others need pyiqa
    (pip install "promptsr-model\\[eval]") and are skipped with a note when it or their weights are missing.
    """
    from sr_degrade.errors import SrDegradeError

    from .evaluate import EvalOptions, evaluate

    sampling = _sampling(steps, scheduler, seed, tile, overlap, batch, color_fix, clip, no_clip, strength)
    up, loader, metric_set, total = _eval_common(
        model, data, name, lr_folder, prompts, metrics, metric_weights, limit, device, dtype
    )
    opts = EvalOptions(
        **sampling.upscale_kwargs(), prompt_format=prompt_format, free_text=free_text, grids=grids,
        save_images=save_images, estimator=str(estimator) if estimator else None,
    )  # fmt: skip
    try:
        result = evaluate(up, loader(), metric_set, out, opts, total=total)
    except SrDegradeError as e:
        fail(str(e))
    typer.echo((out / "summary.md").read_text())
    _finish(result.failures, out, "per_image.csv, summary.md, summary.json")


_Models = Annotated[
    list[Path], typer.Option("--model", "-m", help="Model folder; for 'models' repeat it, one per variant.")
]
_AblationOut = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (required).")]
_Seed = Annotated[int, typer.Option(help="Seed of the noise and of re-rendered prompts.")]
_AblateDevice = Annotated[str, typer.Option(help="cpu, cuda, ...")]
_ABLATIONS = ("prompt", "format", "models", "loss")


class _AblationGroup(typer.core.TyperGroup):
    """`promptsr ablate STUDY`: an unknown study is named with the choices (exit 2)."""

    def list_commands(self, ctx) -> list[str]:
        return [n for n in _ABLATIONS if n in self.commands]

    def resolve_command(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            fail(f"unknown ablation {args[0]!r}: choose one of {', '.join(_ABLATIONS)}")
        return super().resolve_command(ctx, args)


ablate_app = typer.Typer(
    cls=_AblationGroup,
    help="Ablation tables on evaluation shards (paper Tables 1, 2, 3, 5) and the prompt-signal loss table.",
    no_args_is_help=True,
)
app.add_typer(ablate_app, name="ablate")


def _ablate_sampling(
    study: str, model: list[Path], labels: list[str], out: Optional[Path], data, name, metrics, metric_weights,
    limit, steps, scheduler, seed, device, dtype, tile, overlap, batch,
) -> None:  # fmt: skip
    """`promptsr ablate prompt|format|models`: every setting evaluated like promptsr eval into OUT/<setting>/."""
    from sr_degrade.errors import SrDegradeError

    from .evaluate import EvalOptions, run_ablation
    from .inference import Upscaler

    if out is None:
        fail(f"ablation {study!r} needs --out (the folder of its tables and images)")
    if study != "models" and len(model) != 1:
        fail(f"ablation {study!r} takes one --model (got {len(model)})")
    if study == "models" and (len(model) < 2 or (labels and len(labels) != len(model))):
        fail("ablation 'models' needs two or more --model, and one --label per --model if any")
    sampling = _sampling(steps, scheduler, seed, tile, overlap, batch, "none", None, False, 1.0)
    up, loader, metric_set, total = _eval_common(
        model[0], data, name, None, None, metrics, metric_weights, limit, device, dtype
    )
    loaders = {"promptsr": lambda: up}
    if study == "models":
        labels = labels or [m.name for m in model]
        if len(set(labels)) != len(labels):
            fail(f"two models share the label {labels}: pass --label per --model")
        try:  # every folder checked before hours of sampling start
            others = [Upscaler(m, device=device, dtype=dtype) for m in model[1:]]
        except (SrDegradeError, OSError) as e:
            fail(str(e))
        loaders = {lab: (lambda u=u: u) for lab, u in zip(labels, [up, *others])}
    try:
        record, _ = run_ablation(
            study, loaders, loader, metric_set, out, EvalOptions(**sampling.upscale_kwargs()), total=total
        )
    except SrDegradeError as e:
        fail(str(e))
    typer.echo((out / f"ablation_{study}.md").read_text())
    _finish(record["failures"], out, f"ablation_{study}.md, ablation_{study}.json")


def _sampling_study(study: str, doc: str):
    """The command of one sampling ablation: one signature for the three (the same options as eval)."""

    def command(
        model: _Models,
        out: _AblationOut = None,
        data: _Data = [],  # noqa: B006 (typer reads the default, never mutates it)
        name: _Names = [],  # noqa: B006
        label: Annotated[
            list[str], typer.Option("--label", help="('models') Row label per --model (default: folder name).")
        ] = [],  # noqa: B006
        metrics: _Metrics = "psnr,ssim,lpips,dists",
        metric_weights: _Weights = [],  # noqa: B006
        limit: _Limit = None,
        steps: _Steps = 50,
        scheduler: _Scheduler = "ddim",
        seed: _Seed = 0,
        device: _AblateDevice = "cpu",
        dtype: _Dtype = "float32",
        tile: _Tile = 512,
        overlap: _Overlap = 64,
        batch: _Batch = 4,
    ) -> None:
        if label and study != "models":
            fail(f"--label applies to 'models' (one per --model), not to {study!r}")
        _ablate_sampling(study, model, label, out, data, name, metrics, metric_weights, limit, steps, scheduler,
                         seed, device, dtype, tile, overlap, batch)  # fmt: skip

    command.__doc__ = doc
    ablate_app.command(study, epilog=_EVAL_EXIT)(friendly(command))


_sampling_study(
    "prompt",
    """Table 1: each image's prompt against the empty prompt.

    One model, every image sampled twice; writes OUT/ablation_prompt.md and .json, and each setting's
    images like promptsr eval into OUT/<setting>/.""",
)
_sampling_study(
    "format",
    """Table 3b: the prompts re-rendered original / shuffled / simplified.

    One model; the prompts are rendered again from each sample's stored parameters. Writes
    OUT/ablation_format.md and .json, and each setting's images into OUT/<setting>/.""",
)
_sampling_study(
    "models",
    """Tables 2, 3a, 5: several models trained differently, one row each.

    Model folders trained differently (one vs two resizes, fixed vs random order, text encoders) on the
    same shards, repeated --model (and --label). Writes OUT/ablation_models.md and .json, and each
    model's images into OUT/<label>/.""",
)


@ablate_app.command("loss")
@friendly
def ablate_loss_cmd(
    model: _Models,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the table here.")] = None,
    data: _Data = [],  # noqa: B006
    name: _Names = [],  # noqa: B006
    limit: _Limit = None,
    seed: _Seed = 0,
    device: _AblateDevice = "cpu",
    draws: Annotated[int, typer.Option(help="Paired (t, noise) draws per image.")] = 4,
    crop: Annotated[int, typer.Option(help="HR centre-crop side in pixels; 0: the whole image.")] = 256,
) -> None:
    """The prompt signal: held-out loss under the true, empty and a wrong prompt (no sampling).

    Minutes, not hours: one model's loss under each image's true prompt, the empty prompt and a wrong one
    (every level moved furthest), on the same --draws (t, noise) per image; prints the table, and writes
    OUT/ablation_loss.md and .json when --out is given. Expected once the model reads its prompt:
    true < wrong, true < empty. Exit 2 with one error line for bad input."""
    _ablate_loss(model, out, data, name, limit, seed, draws, crop, device)


def _ablate_loss(
    model: list[Path],
    out: Optional[Path],
    data: list[str],
    names: list[str],
    limit: Optional[int],
    seed: int,
    draws: int,
    crop: int,
    device: str,
) -> None:
    """`promptsr ablate loss`: every input checked first."""
    from sr_degrade.errors import SrDegradeError
    from sr_degrade.shards import shard_files

    from .export import load_model
    from .prompt_signal import ablate_loss, loss_markdown, write_loss_ablation

    if len(model) != 1:
        fail(f"ablation 'loss' takes one --model (got {len(model)})")
    if not data:
        fail("ablation 'loss' needs --data (evaluation shards)")
    if names and len(names) != len(data):
        fail(f"--name given {len(names)} times for {len(data)} dataset(s)")
    from .evaluate import dataset_label

    labels = list(names) or [dataset_label(d) for d in data]
    if len(set(labels)) != len(labels):
        fail(f"two datasets share a name ({', '.join(labels)}): name them with --name")
    if draws < 1 or crop < 0 or (limit is not None and limit < 1):
        fail("--draws and --limit must be at least 1, and --crop 0 (whole image) or more")
    try:
        for d in data:
            shard_files(d)  # raises now when there are no shards
        loaded = load_model(model[0], device=device)
        record = ablate_loss(
            loaded, dict(zip(labels, data)), limit=limit, seed=seed, draws=draws, crop=crop, device=device
        )
    except (SrDegradeError, OSError, ValueError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    typer.echo(loss_markdown(record))
    if out is not None:
        write_loss_ablation(record, out)
        typer.echo(f"wrote ablation_loss.md, ablation_loss.json in {out}")


@app.command("suggest")
@friendly
def suggest(
    images: Annotated[list[Path], typer.Argument(help="LR images to describe.")],
    estimator: Annotated[Optional[Path], typer.Option("--estimator", help="A degradation estimator folder.")] = None,
    model: Annotated[
        Optional[Path], typer.Option("--model", "-m", help="A model folder holding an estimator/ (if no --estimator).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: prompt, levels and each class's probability.")] = False,
) -> None:
    """Print the degradation prompt the estimator reads in each image (the original, canonical format)."""
    import json

    from sr_degrade.errors import SrDegradeError
    from sr_degrade.imageio import read_image

    missing = [str(i) for i in images if not i.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    if estimator is None and model is None:
        fail("suggest needs --estimator DIR (or --model DIR holding an estimator/)")
    from .prompts import find_estimator

    folder = find_estimator(estimator, model)
    if folder is None:
        fail(f"{estimator or model} holds no degradation estimator: pass --estimator DIR (train one with "
             "`promptsr estimator train --data SHARDS --val SHARDS --out DIR`)")  # fmt: skip
    from .estimator import load_estimator

    try:
        est = load_estimator(folder)
    except SrDegradeError as e:
        fail(str(e))
    records, failures = [], 0
    for f in images:
        try:
            text, _notes, probs = est.prompt(read_image(f))
        except (SrDegradeError, OSError) as e:
            typer.echo(f"error: {f}: {e}", err=True)
            failures += 1
            continue
        levels = {c: max(p, key=p.get) for c, p in probs.items()}
        records.append({"image": str(f), "prompt": text, "levels": levels, "probabilities": probs})
        if not as_json:
            typer.echo(f"{f}: {text}")
    if as_json:
        typer.echo(json.dumps(records, indent=2))
    if failures:
        raise typer.Exit(2 if failures == len(images) else 1)


estimator_app = typer.Typer(
    help="Train and evaluate the degradation estimator (the prompt for photos nobody degraded).",
    no_args_is_help=True,
)
app.add_typer(estimator_app, name="estimator")
# The estimator's prediction lives with its training and evaluation; `promptsr suggest` stays as its alias.
estimator_app.command("predict")(suggest)


@estimator_app.command("train")
@friendly
def estimator_train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Estimator folder to write.")],
    photos: Annotated[
        Optional[str],
        typer.Option(
            "--photos",
            help="HR photos degraded afresh for every crop (a folder, a list file, 'sample'): the recommended way.",
        ),
    ] = None,
    data: Annotated[
        Optional[list[str]], typer.Option("--data", help="Or training shards (folder, pattern or file).")
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="Degradation config for --photos (default: the shipped omission config)."),
    ] = None,
    val: Annotated[
        Optional[str], typer.Option("--val", help="Held-out shards: accuracy and majority baseline.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 3000,
    batch: Annotated[int, typer.Option(help="Crops per step.")] = 32,
    crop: Annotated[int, typer.Option(help="LR crop side in pixels.")] = 32,
    width: Annotated[int, typer.Option(help="Channels of the first stage.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed of the weights, the crops and their degradations.")] = 0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "-j",
            help="Processes degrading photos (--photos); 0 = all cores (one per core but the training's). The crops "
            "drawn depend on it.",
        ),
    ] = 1,
) -> None:
    """Train the estimator on photos degraded on the fly (--photos) or on shards' LR images (--data),
    labelled by each sample's bins; with the omission config, "none" is learned for blur, noise, JPEG."""
    import json

    from sr_degrade.errors import SrDegradeError
    from sr_degrade.shards import shard_files

    if min(steps, batch, width) < 1 or crop < 8 or workers < 0:
        fail("--steps, --batch and --width must be at least 1, --crop at least 8, --workers at least 0")
    if (photos is None) == (not data):
        fail("give the training data as --photos DIR (degraded on the fly) or as --data SHARDS, one of the two")
    if config is not None and photos is None:
        fail("--config applies to --photos (shards carry the degradation they were built with)")
    if workers == 0:  # 0 meant "in the main process" until 0.1; now what it means in every command
        import os

        workers = max(1, (os.cpu_count() or 1) - 1)
        typer.echo(
            f"note: --workers 0 means all cores ({workers} processes here), as in sr-degrade build; "
            "it no longer means loading in the training process",
            err=True,
        )
    try:
        for d in [*(data or []), *([val] if val else [])]:
            shard_files(d)  # before torch loads: no shards, one line
        degradation = None
        if config is not None:
            from sr_degrade.config import DegradationConfig

            degradation = DegradationConfig.load(config)
    except SrDegradeError as e:
        fail(str(e))
    from .estimator import EstimatorConfig, train_estimator

    cfg = EstimatorConfig(crop=crop, width=width, steps=steps, batch=batch, lr=lr, seed=seed)
    try:
        record = train_estimator(
            data or None, val, out, cfg, log=lambda m: typer.echo(m, err=True), photos=photos,
            degradation=degradation, workers=workers,
        )  # fmt: skip
    except SrDegradeError as e:
        fail(str(e))
    typer.echo(json.dumps(record, indent=2))
    typer.echo(f"wrote {out}")


class _OldJsonPath(typer.core.TyperCommand):
    """`--json PATH` (0.1: write the JSON to PATH) kept for one release, with a notice: `--json` is a flag
    in every command now (print JSON instead of the table)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            old = arg.startswith("--json=") or (
                arg == "--json" and i + 1 < len(args) and not args[i + 1].startswith("-")
            )
            if old:
                args[i : i + 1] = ["--json-file", arg.partition("=")[2]] if "=" in arg else ["--json-file"]
                typer.echo(
                    "note: `--json PATH` is deprecated and goes in the next release: --json now prints the JSON "
                    "instead of the table (redirect it: --json > PATH)",
                    err=True,
                )
                break
        return super().parse_args(ctx, args)


@estimator_app.command("eval", cls=_OldJsonPath)
@friendly
def estimator_eval(
    data: Annotated[list[str], typer.Option("--data", help="Held-out shards (photos the estimator never saw).")],
    estimator: Annotated[Path, typer.Option("--estimator", help="The estimator folder.")],
    limit: _Limit = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of the tables.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json-file", hidden=True)] = None,
) -> None:
    """Per-component accuracy, confusion matrices and the majority-class baseline of the same set."""
    import json

    from sr_degrade.errors import SrDegradeError
    from sr_degrade.shards import shard_files

    try:
        for d in data:
            shard_files(d)
        if not (estimator / "estimator.json").is_file():
            raise SrDegradeError(f"{estimator} is not an estimator folder (no estimator.json)")
        from .estimator import eval_markdown, evaluate_estimator, load_estimator

        result = evaluate_estimator(load_estimator(estimator), data, limit)
    except SrDegradeError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(eval_markdown(result))
    if json_out:  # the deprecated `--json PATH`
        json_out.write_text(json.dumps(result, indent=2))


@app.command("app")
@friendly
def app_cmd(
    model: Annotated[Path, typer.Option("--model", "-m", help="A model folder written by promptsr export.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface of this machine).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    share: Annotated[
        bool, typer.Option("--share", help="Also make a public gradio.live link (calls out to gradio's servers).")
    ] = False,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="Folder of each run's LR, output and jobs.jsonl (default: a new temp folder)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    steps: Annotated[int, typer.Option(help="The page's initial sampling steps.")] = 50,
    strength: _Strength = 1.0,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="Largest LR the page accepts, in pixels (x16 at the output for x4).")
    ] = 1_000_000,
) -> None:
    """Serve a page to try the model in a browser: upload or degrade an LR, build the prompt, watch the
    steps, compare with bicubic, download the PNG and copy the command that reproduces it. Needs the
    \\[app] extra: pip install "promptsr-model\\[app]". Nothing on the page is fetched from outside."""
    import importlib.util

    if not (model / "promptsr.json").is_file():  # before torch and gradio load: refused at once
        fail(f"{model} is not a PromptSR model folder (no promptsr.json); make one with promptsr export")
    if not 0 <= port <= 65535:
        fail(f"--port {port} must be in 0..65535")
    if steps < 1 or max_pixels < 1:
        fail("--steps and --max-pixels must be at least 1")
    if importlib.util.find_spec("gradio") is None:
        fail("the app needs gradio: pip install 'promptsr-model[app]'")
    from sr_degrade.errors import SrDegradeError

    from .app import Settings, serve

    try:
        serve(
            model, host=host, port=port, share=share, device=device, out=out, max_pixels=max_pixels,
            defaults=Settings(steps=steps, strength=strength), log=lambda m: typer.echo(m, err=True),
        )  # fmt: skip
    except (SrDegradeError, OSError, ValueError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def _show_version(value: bool) -> None:
    if value:  # eager: answered before any command is looked for, as `promptsr version`
        version()
        raise typer.Exit()


@app.callback()
def main(
    show: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the versions.")
    ] = False,
) -> None:
    """PromptSR: text-prompt diffusion super-resolution: train, export, upscale, compare, evaluate, ablate."""


def run() -> None:
    app()
