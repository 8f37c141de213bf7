"""The promptsr command line: parses arguments and calls the library (no model logic here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__

app = typer.Typer(
    name="promptsr",
    help="PromptSR: text-prompt diffusion super-resolution: train, export, inspect presets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("version")
def version() -> None:
    """Print the versions of promptsr and the sr-degrade it uses."""
    import sr_degrade

    typer.echo(f"promptsr {__version__} (sr-degrade {sr_degrade.__version__})")


@app.command("info")
def info(
    preset: Annotated[str, typer.Option("--preset", help="Denoiser preset: promptsr_x4 (the paper's) or tiny.")] = (
        "promptsr_x4"
    ),
) -> None:
    """Print a denoiser preset's parameter count and full config."""
    import torch

    from .unet import build_unet, count_parameters

    try:
        # Built on the meta device: the count and config need no memory or initialisation time.
        with torch.device("meta"):
            model = build_unet(preset)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
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
def train(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML training config.")] = None,
) -> None:
    """Train in this process (for several GPUs or ranks: accelerate launch packages/promptsr-model/train.py).

    Extra arguments are key=value overrides, e.g. optim.lr=1e-4 run.output_dir=runs/a.
    """
    from .trainer import main as train_main

    argv = (["--config", str(config)] if config else []) + list(ctx.args)
    raise typer.Exit(train_main(argv))


@app.command("export")
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
) -> None:
    """Write a self-contained model folder: weights, schedule, encoder record, prompt-embedding table."""
    from sr_degrade.errors import SrDegradeError

    from .export import export_model

    try:
        folder = export_model(run_dir, output, checkpoint=checkpoint, use_ema=not no_ema, text_encoder=text_encoder)
    except SrDegradeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {folder}")


def _prompt_table(path: Path) -> dict[str, str]:
    """image file name (or stem) -> prompt, from a CSV with columns image,prompt."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"image", "prompt"} <= set(rows[0]):
        raise typer.BadParameter(f"{path}: needs the columns image,prompt (found {', '.join(rows[0])})")
    return {r["image"]: r["prompt"] for r in rows}


@app.command("upscale")
def upscale(
    inputs: Annotated[list[Path], typer.Argument(help="LR images, or folders of them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output image (one input) or folder.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="A model folder written by promptsr export.")],
    prompt: Annotated[
        Optional[str], typer.Option("--prompt", "-p", help='Degradation prompt, e.g. "light blur, downsample".')
    ] = None,
    prompts: Annotated[
        Optional[Path], typer.Option("--prompts", help="CSV of image,prompt rows (per-image prompts).")
    ] = None,
    free_text: Annotated[bool, typer.Option("--free-text", help="Pass any prompt to the text encoder.")] = False,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 50,
    scheduler: Annotated[str, typer.Option(help="ddim, dpm-solver++, euler, unipc or a diffusers class.")] = "ddim",
    seed: Annotated[int, typer.Option(help="Seed of the initial noise.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16.")] = "float32",
    batch: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 4,
    tile: Annotated[int, typer.Option(help="Tile side in HR pixels (memory is bounded by it).")] = 512,
    overlap: Annotated[int, typer.Option(help="Overlap of neighbouring tiles in HR pixels.")] = 64,
    color_fix: Annotated[str, typer.Option("--color-fix", help="none, adain or wavelet.")] = "none",
) -> None:
    """Upscale images with a prompt: output exactly scale x the input, any size (tiles blended every step).

    Per-image prompts come from --prompts CSV or a sidecar IMAGE.txt next to the image; otherwise --prompt;
    without any, the empty prompt. In-vocabulary prompts use the model's embedding table.
    """
    from sr_degrade.errors import SrDegradeError
    from sr_degrade.imageio import IMAGE_EXTENSIONS, read_image, write_image
    from sr_degrade.progress import Progress

    from .inference import Upscaler

    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(item)
    if not files:
        typer.echo("error: no input images found", err=True)
        raise typer.Exit(2)
    to_folder = len(files) > 1 or any(i.is_dir() for i in inputs) or output.suffix == ""
    try:
        table = _prompt_table(prompts) if prompts else {}
        up = Upscaler(model, device=device, dtype=dtype)
    except (SrDegradeError, OSError, typer.BadParameter) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if prompt is None and not table and not any(f.with_suffix(".txt").exists() for f in files):
        typer.echo("note: no prompt given: using the empty prompt (the model's 'without prompt' setting)", err=True)
    failures: list[str] = []
    bar = Progress(len(files) * steps, "upscale", unit="step")
    for f in files:
        text = table.get(f.name, table.get(f.stem))
        if text is None and f.with_suffix(".txt").exists():
            text = f.with_suffix(".txt").read_text().strip()
        text = prompt if text is None else text
        target = output / (f.stem + ".png") if to_folder else output
        try:
            lr = read_image(f)
            sr = up.upscale(
                lr, text or "", steps=steps, scheduler=scheduler, seed=seed, tile=tile, overlap=overlap,
                batch=batch, color=color_fix, free_text=free_text, callback=lambda i, n: bar.update(1),
            )  # fmt: skip
            write_image(target, sr)
        except (SrDegradeError, OSError) as e:
            failures.append(str(e) if str(f) in str(e) else f"{f}: {e}")
            typer.echo(f"error: {failures[-1]}", err=True)
    bar.close()
    done = len(files) - len(failures)
    typer.echo(f"upscaled {done} of {len(files)} images x{up.scale} -> {output}")
    if failures:
        typer.echo(f"{len(failures)} failed:", err=True)
        for line in failures:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1)


@app.callback()
def main(
    show: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    """PromptSR: text-prompt diffusion super-resolution."""
    if show:
        typer.echo(f"promptsr {__version__}")


def run() -> None:
    app()
