"""The sr-degrade command line. It only parses arguments and calls the library."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .config import DegradationConfig
from .errors import SrDegradeError
from .imageio import read_image, write_image
from .params import crop_to_scale, degrade, sample_params, sample_rng
from .text import PROMPT_FORMATS, bins, describe, parse_prompt, vocabulary

app = typer.Typer(
    name="sr-degrade",
    help="Degrade HR photos the way text-prompt SR trains on them, and word each degradation as a prompt.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def friendly(fn):
    """Turn the errors a user can fix into one line on stderr and exit code 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SrDegradeError as e:
            raise _fail(str(e)) from None
        except OSError as e:
            raise _fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")) from None

    return wrapper


def _load_config(path: Optional[Path], scale: Optional[int]) -> DegradationConfig:
    cfg = DegradationConfig.load(path) if path else DegradationConfig()
    if scale is not None and scale != cfg.scale:
        cfg = DegradationConfig.from_dict({**cfg.to_dict(), "scale": scale})
    return cfg


def _check_format(fmt: str) -> str:
    if fmt not in PROMPT_FORMATS:
        raise SrDegradeError(f"unknown --format {fmt!r}; choose one of {', '.join(PROMPT_FORMATS)}")
    return fmt


ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML or JSON degradation config (partial files override defaults)."),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help=f"Prompt format: {', '.join(PROMPT_FORMATS)}.")]


@app.command("degrade")
@friendly
def degrade_cmd(
    image: Annotated[Path, typer.Argument(help="HR photo to degrade (PNG, JPEG, ...).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the LR image (PNG by default).")],
    seed: Annotated[int, typer.Option(help="Seed of the drawn degradation; same seed, same bytes.")] = 0,
    config: ConfigOpt = None,
    fmt: FormatOpt = "original",
    scale: Annotated[Optional[int], typer.Option(help="SR factor (overrides the config's).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only JSON: prompt, bins and exact parameters.")
    ] = False,
) -> None:
    """Degrade one photo: write its LR image and print the prompt that describes the degradation.

    The LR image is exactly (H // scale) x (W // scale); when a side is not a multiple of the scale
    the LR matches the photo's top-left multiple-of-scale crop.
    """
    cfg = _load_config(config, scale)
    _check_format(fmt)
    hr = read_image(image)
    rng = sample_rng(seed, image.name)
    params = sample_params(cfg, rng)
    lr = degrade(hr, params)
    prompt = describe(params, fmt, rng=rng, cfg=cfg)
    write_image(output, lr)
    if as_json:
        used = crop_to_scale(hr, cfg.scale).shape
        record = {
            "input": str(image),
            "output": str(output),
            "seed": seed,
            "prompt": prompt,
            "format": fmt,
            "bins": bins(params, cfg),
            "params": params.to_dict(),
            "hr_size": [hr.shape[1], hr.shape[0]],
            "hr_used": [used[1], used[0]],
            "lr_size": [lr.shape[1], lr.shape[0]],
        }
        typer.echo(json.dumps(record, indent=2))
    else:
        typer.echo(prompt)


@app.command("describe")
@friendly
def describe_cmd(
    prompt: Annotated[str, typer.Argument(help='A prompt, e.g. "heavy blur, upsample, medium noise".')],
    free_text: Annotated[
        bool, typer.Option("--free-text", help="Keep phrases outside the vocabulary instead of failing.")
    ] = False,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {component: level} as JSON.")] = False,
) -> None:
    """Parse a prompt and print the level of each degradation component it names."""
    cfg = _load_config(config, None)
    parsed = parse_prompt(prompt, strict=not free_text, cfg=cfg)
    if as_json:
        typer.echo(json.dumps({"levels": dict(parsed), "free_text": list(parsed.unknown)}))
        return
    if not parsed and not parsed.unknown:
        typer.echo("(empty prompt: no degradation named)")
    for component, level in parsed.items():
        typer.echo(f"{component:<8} {level}")
    for text in parsed.unknown:
        typer.echo(f"{'free':<8} {text!r}")


@app.command("vocab")
@friendly
def vocab_cmd(config: ConfigOpt = None) -> None:
    """List every phrase a prompt may hold."""
    for phrase in vocabulary(_load_config(config, None)):
        typer.echo(phrase)


@app.command("config")
@friendly
def config_cmd(
    check: Annotated[
        Optional[Path], typer.Option("--check", help="Validate this YAML/JSON config and print it resolved.")
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write instead of printing.")] = None,
) -> None:
    """Print the default degradation config as YAML (a starting point to edit), or check one."""
    cfg = _load_config(check, None)
    if output:
        cfg.dump(output)
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(cfg.to_yaml(), nl=False)


@app.command("demo")
@friendly
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo_out"),
    seed: Annotated[int, typer.Option(help="Seed of the drawn degradations.")] = 0,
    config: ConfigOpt = None,
) -> None:
    """Degrade the bundled sample photos: LR images, prompts.jsonl and a contact sheet."""
    from .samples import sample_paths
    from .sheet import contact_sheet

    cfg = _load_config(config, None)
    rows, records = [], []
    paths = sample_paths()
    start = time.perf_counter()
    for i, path in enumerate(paths, 1):
        hr = read_image(path)
        params = sample_params(cfg, sample_rng(seed, path.name))
        lr = degrade(hr, params)
        prompt = describe(params, cfg=cfg)
        write_image(out / "lr" / f"{path.stem}.png", lr)
        records.append({"image": path.name, "lr": f"lr/{path.stem}.png", "prompt": prompt, "params": params.to_dict()})
        rows.append(([hr, lr], prompt))
        rate = i / (time.perf_counter() - start)
        typer.echo(f"[{i}/{len(paths)}] {path.name}: {prompt}  ({rate:.1f} img/s)", err=True)
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_image(out / "contact_sheet.png", contact_sheet(rows, header=["HR", "LR (shown enlarged)", "prompt"]))
    typer.echo(f"wrote {len(records)} LR images, {out / 'prompts.jsonl'} and {out / 'contact_sheet.png'}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sr-degrade {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Degrade HR photos the way text-prompt SR trains on them, and word each degradation as a prompt."""


def run() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(run())
