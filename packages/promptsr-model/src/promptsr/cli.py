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


@app.callback()
def main(
    show: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    """PromptSR: text-prompt diffusion super-resolution."""
    if show:
        typer.echo(f"promptsr {__version__}")


def run() -> None:
    app()
