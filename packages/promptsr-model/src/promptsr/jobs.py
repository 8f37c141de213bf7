"""`promptsr upscale`'s work on files: the input images, and each one upscaled with its prompt into the
output (a file or a folder) under one progress line, a failing image reported and the others done."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sr_degrade.errors import SrDegradeError

from .options import SamplingOptions
from .prompts import PromptSource


def input_files(inputs: list[Path]) -> list[Path]:
    """The images named, folders expanded (sorted, recursive); SrDegradeError for a missing path or none found."""
    from sr_degrade.imageio import IMAGE_EXTENSIONS

    missing = [str(i) for i in inputs if not i.exists()]
    if missing:
        raise SrDegradeError(f"no such file or folder: {', '.join(missing)}")
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(item)
    if not files:
        raise SrDegradeError("no input images found")
    return files


def upscale_files(
    up,
    files: list[Path],
    output: Path,
    prompts: PromptSource,
    opts: SamplingOptions,
    *,
    to_folder: bool,
    say: Callable[[str], None] = print,
    note: Callable[[str], None] = print,
    error: Callable[[str], None] = print,
) -> list[str]:
    """Upscale every file with `up` (an Upscaler) into `output` (OUTPUT/STEM.png when `to_folder`); the
    failures, one line each (also passed to `error` as they happen). Each image's size is checked from
    its header before it is decoded; the progress line counts sampling steps over all images."""
    from sr_degrade.imageio import read_image, read_image_size, write_image
    from sr_degrade.progress import Progress

    from .diffusion_config import steps_run

    failures: list[str] = []
    bar = None
    for f in files:
        target = output / (f.stem + ".png") if to_folder else output
        try:
            width, height = read_image_size(f, max_pixels=None)  # the header alone: refused before decoding
            up.check_fits(height, width)
            lr = read_image(f, max_pixels=None)
            resolved = prompts.resolve(f, lr)
            for kind, line in resolved.lines:
                (say if kind == "say" else note)(line)
            if bar is None:
                bar = Progress(len(files) * steps_run(opts.steps, opts.strength), "upscale", unit="step")
            sr = up.upscale(
                lr, resolved.text, free_text=prompts.free_text, callback=lambda i, n, bar=bar: bar.update(1),
                **opts.upscale_kwargs(),
            )  # fmt: skip
            write_image(target, sr)
        except (SrDegradeError, OSError) as e:
            failures.append(str(e) if str(f) in str(e) else f"{f}: {e}")
            error(failures[-1])
    if bar is not None:
        bar.close()
    return failures
