"""The sr-degrade command line. It only parses arguments and calls the library."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .cli_errors import friendly
from .config import DegradationConfig
from .errors import SrDegradeError, printable
from .imageio import MAX_PIXELS, read_image, write_image
from .params import crop_to_scale, degrade, sample_params, sample_rng
from .progress import plural
from .text import PROMPT_FORMATS, bins, describe, parse_prompt, vocabulary

app = typer.Typer(
    name="sr-degrade",
    help="Degrade HR photos the way text-prompt SR trains on them, and word each degradation as a prompt.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (free text kept, a folder skipped, a prompt truncated) as one `warning:` line,
    without Python's source-line decoration."""
    typer.echo(f"warning: {printable(str(message))}", err=True)


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
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        help="Refuse source images larger than this (width x height), read from the file header before decoding.",
    ),
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
    max_pixels: MaxPixelsOpt = MAX_PIXELS,
) -> None:
    """Degrade one photo: write its LR image and print the prompt that describes the degradation.

    The LR image is exactly (H // scale) x (W // scale); when a side is not a multiple of the scale
    the LR matches the photo's top-left multiple-of-scale crop.
    """
    cfg = _load_config(config, scale)
    _check_format(fmt)
    hr = read_image(image, max_pixels)
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
    """Degrade the bundled sample photos: LR images with sidecar prompts (.txt), the aligned HR images (hr/),
    prompts.jsonl and a contact sheet."""
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
        # The HR exactly aligned with the LR (its top-left crop to a multiple of the scale), to compare against.
        write_image(out / "hr" / f"{path.stem}.png", hr[: lr.shape[0] * cfg.scale, : lr.shape[1] * cfg.scale])
        # A sidecar prompt beside each LR: `promptsr upscale` picks it up by itself.
        (out / "lr" / f"{path.stem}.txt").write_text(prompt + "\n")
        records.append({"image": path.name, "lr": f"lr/{path.stem}.png", "prompt": prompt, "params": params.to_dict()})
        rows.append(([hr, lr], prompt))
        rate = i / (time.perf_counter() - start)
        typer.echo(f"[{i}/{len(paths)}] {path.name}: {prompt}  ({rate:.1f} img/s)", err=True)
    (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_image(out / "contact_sheet.png", contact_sheet(rows, header=["HR", "LR (shown enlarged)", "prompt"]))
    typer.echo(f"wrote {len(records)} LR images, {out / 'prompts.jsonl'} and {out / 'contact_sheet.png'}")


# The options of `build` (module-level so that the command reads as a list of them).
_Src = Annotated[
    str, typer.Option("--src", help="Named source (LSDIR, DIV2K-val, ...), 'sample', a folder or a list file.")
]
_Out = Annotated[
    str,
    typer.Option(
        "--out", "-o", help="Output folder for the shards, index.parquet, build.json; or a URL (s3://bucket/dir)."
    ),
]
_Root = Annotated[
    Optional[str], typer.Option("--root", help="Root folder of a named source (or its environment variable).")
]
_Split = Annotated[
    Optional[str],
    typer.Option("--split", help="The named source's split (default: train, or its only split); names the shards."),
]
_CropSize = Annotated[
    Optional[int],
    typer.Option("--crop-size", help="HR crop side; default 512 (256 for 'sample'); 0 = whole image."),
]
_CropsPerImage = Annotated[int, typer.Option("--crops-per-image", help="Crops (samples) per image.")]
_Val = Annotated[bool, typer.Option("--val", help="Evaluation set: whole images, one fixed degradation each.")]
_ShardSize = Annotated[int, typer.Option("--shard-size", help="Samples per shard.")]
_Seed = Annotated[int, typer.Option(help="Build seed; same seed and arguments, same bytes.")]
_Workers = Annotated[int, typer.Option("--workers", "-j", help="Worker processes (0 = all cores).")]
_TextEncoder = Annotated[
    Optional[str],
    typer.Option(
        "--text-encoder",
        help="Hugging Face name or local path (default openai/clip-vit-large-patch14); 'minilm' works offline.",
    ),
]
_NoEmbed = Annotated[bool, typer.Option("--no-embed", help="Store no embeddings (prompts only).")]
_Holdout = Annotated[
    float, typer.Option("--holdout", help="Fraction of source images held out (whole images, stable hash).")
]
_Take = Annotated[
    str, typer.Option("--take", help="With --holdout: 'rest' builds the others, 'holdout' the held-out images.")
]
_Part = Annotated[
    Optional[str], typer.Option("--part", help="Build slice i of N ('i/N'), for a job array; see 'merge'.")
]
_Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted build with the same arguments.")]
_Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a build already in --out.")]
_Scale = Annotated[Optional[int], typer.Option(help="SR factor (overrides the config's).")]
_NoCheck = Annotated[
    bool, typer.Option("--no-manifest-check", help="Do not compare a named source with its manifest first.")
]
_Engine = Annotated[
    str, typer.Option("--engine", help="local (worker processes) or ray (one task per shard; sr-degrade[ray]).")
]
_Address = Annotated[
    Optional[str],
    typer.Option("--address", help="With --engine ray: the cluster (HOST:PORT or auto); default a local Ray."),
]


@app.command("build")
@friendly
def build_cmd(
    src: _Src,
    out: _Out,
    root: _Root = None,
    split: _Split = None,
    crop_size: _CropSize = None,
    crops_per_image: _CropsPerImage = 1,
    val: _Val = False,
    shard_size: _ShardSize = 1000,
    seed: _Seed = 0,
    workers: _Workers = 0,
    text_encoder: _TextEncoder = None,
    no_embed: _NoEmbed = False,
    fmt: FormatOpt = "original",
    holdout: _Holdout = 0.0,
    take: _Take = "rest",
    part: _Part = None,
    resume: _Resume = False,
    overwrite: _Overwrite = False,
    config: ConfigOpt = None,
    scale: _Scale = None,
    no_check: _NoCheck = False,
    max_pixels: MaxPixelsOpt = MAX_PIXELS,
    engine: _Engine = "local",
    address: _Address = None,
) -> None:
    """Build webdataset shards: HR crop, LR, prompt, exact parameters and text embedding per sample."""
    from .build import BuildOptions, build

    part_tuple = (0, 1)
    if part is not None:
        try:
            i, n = (int(v) for v in part.split("/"))
        except ValueError:
            raise SrDegradeError(f"--part {part!r}: expected i/N, e.g. 0/4") from None
        part_tuple = (i, n)
    opts = BuildOptions(
        src=src,
        out=out,
        root=root,
        split=split,
        crop_size=crop_size,
        crops_per_image=crops_per_image,
        val=val,
        shard_size=shard_size,
        seed=seed,
        workers=workers,
        text_encoder=text_encoder,
        embed=not no_embed,
        prompt_format=fmt,
        holdout=holdout,
        take=take,
        part=part_tuple,
        resume=resume,
        overwrite=overwrite,
        check_manifest=not no_check,
        max_pixels=max_pixels,
        config=_load_config(config, scale),
        engine=engine,
        address=address,
    )
    summary = build(opts)
    typer.echo(summary.text())
    if summary.errors:
        what = plural(summary.errors, "image") + (" was" if summary.errors == 1 else " were")
        typer.echo(f"{what} not used: see the errors.jsonl in {printable(str(out))}", err=True)


@app.command("merge")
@friendly
def merge_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the merged index.parquet and build.json into.")],
    parts: Annotated[
        Optional[list[Path]], typer.Argument(help="Folders holding the parts (default: OUT itself).")
    ] = None,
) -> None:
    """Join the indexes of a build split with --part i/N into one index.parquet."""
    from .build import merge_parts

    result = merge_parts(out, parts or None)
    typer.echo(f"merged {result['parts']} parts: {result['samples']} samples -> {out / 'index.parquet'}")


@app.command("inspect")
@friendly
def inspect_cmd(
    folder: Annotated[str, typer.Argument(help="A build output folder, or its URL (s3://bucket/shards/train).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Counts, level histograms, the most common prompts, encoder and sizes of a build."""
    from .report import format_inspection, inspect_build

    report = inspect_build(folder)
    typer.echo(json.dumps(report, indent=2) if as_json else format_inspection(report))


@app.command("preview")
@friendly
def preview_cmd(
    folder: Annotated[str, typer.Argument(help="A build output folder, or its URL (s3://bucket/shards/train).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG contact sheet to write.")] = Path("preview.png"),
    count: Annotated[int, typer.Option("--count", "-n", help="Samples to show.")] = 8,
) -> None:
    """Draw a contact sheet of the first samples: HR | LR (enlarged) | prompt."""
    from .report import preview_build

    write_image(output, preview_build(folder, count))
    typer.echo(f"wrote {output}")


@app.command("manifest")
@friendly
def manifest_cmd(
    src: Annotated[str, typer.Option("--src", help="Named source to check (LSDIR, DIV2K-val, ...).")],
    root: Annotated[Optional[str], typer.Option("--root", help="Root folder of the local copy.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Check one split only.")] = None,
    write: Annotated[
        Optional[Path],
        typer.Option("--write", help="Write a manifest of the folder --root (named --src) to this file."),
    ] = None,
    decode: Annotated[bool, typer.Option("--decode", help="Also decode every image to find unreadable ones.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-j", help="Processes for --decode (0 = all cores).")] = 0,
) -> None:
    """Check a local copy of a named source against its manifest, or write a manifest for a new folder."""
    import os

    from .sources import check_manifest, write_manifest

    if write is not None:
        if root is None:
            raise SrDegradeError("--write needs --root: the folder to describe")
        manifest = write_manifest(root, write, name=src, decode=decode, workers=workers or os.cpu_count() or 1)
        count = sum(s.count or 0 for s in manifest.splits)
        typer.echo(f"wrote {write} ({manifest.name}: {count} files)")
        bad = [item for s in manifest.splits for item in (s.unreadable or ())]
        for _key, reason in bad:
            typer.echo(f"unreadable: {reason}", err=True)
        if bad:
            typer.echo(f"{len(bad)} unreadable files are listed in the manifest's 'unreadable' entries", err=True)
        return
    report = check_manifest(src, root, split=split, decode=decode, workers=workers or os.cpu_count() or 1)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


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
    warnings.showwarning = _show_warning


def run() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(run())
