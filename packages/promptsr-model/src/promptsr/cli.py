"""The promptsr command line (skeleton: only --version until the model lands)."""

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


@app.callback()
def main(
    show: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    """PromptSR: text-prompt diffusion super-resolution."""
    if show:
        typer.echo(f"promptsr {__version__}")


def run() -> None:
    app()
