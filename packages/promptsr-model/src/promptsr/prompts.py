"""Where an image's prompt comes from, and the degradation estimator that writes one: the rules of
`promptsr upscale`, `eval` and the app, in one place. Torch-free at import (the estimator loads torch
only when it is opened), so that the command line can refuse a bad prompt before torch loads.

Precedence, per image: a row of the --prompts CSV (by file name, then stem), else a sidecar IMAGE.txt,
else --prompt, else the empty prompt. "auto" asks the estimator; with free text, a prompt in your own
words is mapped onto the vocabulary where it can be ("understood as: ..."), else passed to the text
encoder as written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sr_degrade.errors import SrDegradeError

#: The prompt that asks the degradation estimator to write the prompt.
AUTO = "auto"
ESTIMATOR_FILE = "estimator.json"
NO_ESTIMATOR = (
    "--prompt auto needs a degradation estimator: {model} has none (no estimator/ folder); pass --estimator DIR, "
    "train one with `promptsr estimator train --data SHARDS --val SHARDS --out DIR`, or copy it into the model "
    "folder with `promptsr export --estimator DIR`"
)


def is_auto(text: str | None) -> bool:
    return (text or "").strip().lower() == AUTO


def find_estimator(estimator: Path | None = None, model: Path | None = None) -> Path | None:
    """The estimator folder to use: `estimator` if given, else the model folder's estimator/; None when
    the folder chosen holds none (no estimator.json). No torch."""
    for folder in (estimator, Path(model) / "estimator" if model else None):
        if folder is not None:
            folder = Path(folder)
            return folder if (folder / ESTIMATOR_FILE).is_file() else None
    return None


def open_estimator(folder: Path, scale: int, degradation) -> Any:
    """The estimator at `folder`, loaded and checked against a model's scale and vocabulary
    (SrDegradeError naming what differs)."""
    from .estimator import check_compatible, load_estimator

    est = load_estimator(folder)
    check_compatible(est, scale, degradation)
    return est


def read_prompt_table(path: str | Path) -> dict[str, str]:
    """image file name (or stem) -> prompt, from a CSV with columns image,prompt."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"image", "prompt"} <= set(rows[0]):
        raise SrDegradeError(f"{path}: needs the columns image,prompt (found {', '.join(rows[0])})")
    return {r["image"]: r["prompt"] or "" for r in rows}


def sidecar(image: Path) -> Path:
    return image.with_suffix(".txt")


def given_prompt(image: Path, table: dict[str, str], prompt: str | None) -> str | None:
    """The prompt given for `image`: its CSV row, else its sidecar, else `prompt` (None: none given)."""
    text = table.get(image.name, table.get(image.stem))
    if text is None and sidecar(image).exists():
        text = sidecar(image).read_text().strip()
    return prompt if text is None else text


def needs_estimator(files: list[Path], prompt: str | None, table_file: Path | None) -> bool:
    """Whether any image's prompt is "auto" (checked before anything loads)."""
    if is_auto(prompt) or any(is_auto(sidecar(f).read_text()) for f in files if sidecar(f).exists()):
        return True
    if table_file is not None and Path(table_file).is_file():
        with open(table_file) as f:
            return any(line.rstrip().lower().endswith(f",{AUTO}") for line in f)
    return False


def check_vocabulary(prompt: str, model: Path) -> None:
    """Refuse a prompt outside a model folder's vocabulary before the model loads (its degradation.json)."""
    from sr_degrade.config import DegradationConfig
    from sr_degrade.text import parse_prompt

    cfg_file = Path(model) / "degradation.json"
    cfg = DegradationConfig.from_dict(json.loads(cfg_file.read_text())) if cfg_file.exists() else None
    parse_prompt(prompt, strict=True, cfg=cfg)


@dataclass
class Resolved:
    """A prompt ready for the model, and what to tell the user, in order: ("say", line) for stdout,
    ("note", line) for stderr."""

    text: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    unknown: tuple[str, ...] = ()  #: words of a free-text prompt that were not understood
    mapped: bool = False  #: a free-text prompt mapped onto the vocabulary (else passed on as written)

    @property
    def notes(self) -> list[str]:
        return [line for kind, line in self.lines if kind == "note"]


def understood(text: str, cfg, omission: bool) -> Resolved:
    """A free-text prompt mapped onto the vocabulary ("understood as: ..."); text with no understood
    word at all goes to the text encoder as written."""
    from sr_degrade.text import canonical_prompt, normalise_prompt

    levels = normalise_prompt(text, cfg)
    unknown = tuple(levels.unknown)
    lines = [("note", f"not understood: {', '.join(unknown)}")] if unknown else []
    if not levels:
        lines.append(("say", f"understood as: nothing in the vocabulary; {text!r} goes to the text encoder as written"))
        return Resolved(text, lines, unknown)
    canonical, notes = canonical_prompt(levels, cfg, omission=omission)
    lines += [("note", n) for n in notes] + [("say", f"understood as: {canonical}")]
    return Resolved(canonical, lines, unknown, mapped=True)


class PromptSource:
    """Each image's prompt by the rules above, for one run: `resolve(image, lr)`."""

    def __init__(
        self,
        *,
        prompt: str | None = None,
        table: dict[str, str] | None = None,
        free_text: bool = False,
        estimator: Any = None,
        degradation=None,
        omission: bool = True,
    ):
        self.prompt, self.table, self.free_text = prompt, table or {}, free_text
        self.estimator, self.degradation, self.omission = estimator, degradation, omission
        self._understood: dict[str, Resolved] = {}

    def any_given(self, files: list[Path]) -> bool:
        return self.prompt is not None or bool(self.table) or any(sidecar(f).exists() for f in files)

    def resolve(self, image: Path, lr: Callable[[], Any] | Any) -> Resolved:
        """`lr` is the LR image (or a function that gives it), read only when the estimator needs it."""
        text = given_prompt(image, self.table, self.prompt)
        if is_auto(text):
            if self.estimator is None:
                raise SrDegradeError(NO_ESTIMATOR.format(model="this model"))
            estimated, notes, _ = self.estimator.prompt(lr() if callable(lr) else lr, omission=self.omission)
            return Resolved(
                estimated, [("say", f"{image.name}: estimated prompt: {estimated}")] + [("note", n) for n in notes]
            )
        if self.free_text and text:
            if text not in self._understood:
                self._understood[text] = understood(text, self.degradation, self.omission)
                return self._understood[text]
            return Resolved(self._understood[text].text)  # told once per distinct prompt
        return Resolved(text or "")
