"""The promptsr command line: parses arguments and calls the library (no model logic here)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import __version__

app = typer.Typer(
    name="promptsr",
    help="PromptSR: text-prompt diffusion super-resolution. Model commands arrive with the model.",
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


@app.callback()
def main(
    show: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    """PromptSR: text-prompt diffusion super-resolution."""
    if show:
        typer.echo(f"promptsr {__version__}")


def run() -> None:
    app()
