"""The text representation of a degradation (paper 3.1.2, DESIGN.md section 4).

`bins(params)` maps each applied operation to its level, `describe(params, fmt)` words it as a
prompt, and `parse_prompt(text)` turns a prompt back into levels. All three read the ranges, bin
edges and phrases of one `DegradationConfig`.

Binning: each binned range is split at `bin_edges` into three bins, left-closed, the top edge
included in the last bin; values outside the range fall into the nearest end bin. Blur bins the
isotropic sigma or the anisotropic mean of the two sigmas; noise bins the Gaussian sigma or the
Poisson scale, each over its own range; JPEG bins the quality with the lowest bin "heavy".
"""

from __future__ import annotations

import bisect
import re
import warnings

import numpy as np

from .config import FIRST_OPS, LEVELS, DegradationConfig, canonical_phrase
from .errors import PromptError, SrDegradeError
from .params import DegradationParams

#: Prompt formats: aligned with the applied order, shuffled, simplified (each phrase but resize2's
#: dropped with p 0.5), and empty (the paper's "without prompt" setting).
PROMPT_FORMATS: tuple[str, ...] = ("original", "shuffled", "simplified", "empty")
#: Components in prompt order (the applied order may differ under shuffle_order).
COMPONENTS: tuple[str, ...] = FIRST_OPS + ("resize2",)

_DEFAULT = DegradationConfig()


def bin_index(value: float, edges: tuple[float, ...]) -> int:
    """Index of the left-closed bin holding `value` (top edge in the last bin; ends clamp)."""
    return min(max(bisect.bisect_right(edges, value) - 1, 0), len(edges) - 2)


def level_of(op: str, params: DegradationParams, cfg: DegradationConfig = _DEFAULT) -> str:
    """The level word key of one applied operation (e.g. "medium", "upsample")."""
    if op == "blur":
        return LEVELS[bin_index(params.blur.nominal_sigma, cfg.blur.bin_edges)]
    if op == "resize1":
        r = params.resize1
        if r.kept or r.factor == 1.0:
            return "unchange"
        return "upsample" if r.factor > 1.0 else "downsample"
    if op == "noise":
        n = params.noise
        edges = cfg.noise.gaussian_bin_edges if n.kind == "gaussian" else cfg.noise.poisson_bin_edges
        return LEVELS[bin_index(n.level, edges)]
    if op == "jpeg":
        # Lower quality is heavier: the lowest quality bin is the last level.
        return LEVELS[len(LEVELS) - 1 - bin_index(params.jpeg.quality, cfg.jpeg.bin_edges)]
    if op == "resize2":
        return "downsample"
    raise SrDegradeError(f"unknown operation {op!r}")


def bins(params: DegradationParams, cfg: DegradationConfig = _DEFAULT) -> dict[str, str]:
    """{component: level} for every applied operation, in applied order."""
    return {op: level_of(op, params, cfg) for op in params.order}


def phrase(component: str, level: str, cfg: DegradationConfig = _DEFAULT) -> str:
    """The words for one (component, level), e.g. ("noise", "medium") -> "medium noise"."""
    if component == "resize1":
        return cfg.resize1.words[level]
    if component == "resize2":
        return cfg.resize2.word
    return getattr(cfg, component).words[LEVELS.index(level)]


def describe(
    params: DegradationParams,
    fmt: str = "original",
    rng: np.random.Generator | None = None,
    cfg: DegradationConfig = _DEFAULT,
) -> str:
    """The prompt of `params` in format `fmt` (see PROMPT_FORMATS), phrases joined by ", ".

    "shuffled" and "simplified" draw from `rng` (an explicit numpy Generator, required for them).
    """
    if fmt not in PROMPT_FORMATS:
        raise SrDegradeError(f"unknown prompt format {fmt!r}; choose one of {list(PROMPT_FORMATS)}")
    if fmt == "empty":
        return ""
    if fmt != "original" and rng is None:
        raise SrDegradeError(f"prompt format {fmt!r} is random: pass rng=numpy.random.Generator")
    items = [(op, phrase(op, lvl, cfg)) for op, lvl in bins(params, cfg).items()]
    if fmt == "shuffled":
        items = [items[i] for i in rng.permutation(len(items))]
    elif fmt == "simplified":
        keep = rng.random(len(items)) >= 0.5
        items = [it for it, k in zip(items, keep) if k or it[0] == "resize2"]
    return ", ".join(p for _, p in items)


class ParsedPrompt(dict):
    """{component: level} parsed from a prompt; `unknown` keeps free-text phrases (lenient mode)."""

    def __init__(self, levels: dict[str, str], unknown: tuple[str, ...] = ()):
        super().__init__(levels)
        self.unknown = unknown

    def __repr__(self) -> str:
        return f"ParsedPrompt({dict(self)!r}, unknown={self.unknown!r})"


def vocabulary(cfg: DegradationConfig = _DEFAULT) -> list[str]:
    """Every distinct phrase a prompt may hold, in prompt order."""
    out: list[str] = []
    for _, _, p in cfg.phrases():
        if p not in out:
            out.append(p)
    return out


_SPLIT = re.compile(r"[,;\n]")
_STRIP = " \t\r\n[](){}<>\"'`."


def parse_prompt(text: str, strict: bool = True, cfg: DegradationConfig = _DEFAULT) -> ParsedPrompt:
    """Turn a prompt back into {component: level}.

    Accepts any case, order, spacing, hyphenation ("up-sample") and surrounding brackets or quotes;
    phrases are separated by commas (or semicolons / new lines). One "downsample" is resize2's; two
    mean resize1 and resize2 (resize2's phrase is never dropped, so the rule is exact). The empty
    prompt is valid and gives {}. In strict mode an unknown phrase raises a PromptError listing the
    vocabulary; in lenient mode it is kept in `.unknown` (for the text encoder) with a warning.
    """
    if not isinstance(text, str):
        raise PromptError(f"a prompt must be text, got {type(text).__name__}")
    lookup: dict[str, list[tuple[str, str]]] = {}
    for component, level, words in cfg.phrases():
        lookup.setdefault(canonical_phrase(words), []).append((component, level))
    shared = canonical_phrase(cfg.resize2.word)
    # The counting rule applies only when resize1's "downsample" is worded like resize2's.
    counts_resize1 = canonical_phrase(cfg.resize1.words["downsample"]) == shared

    levels: dict[str, str] = {}
    unknown: list[str] = []
    n_shared = 0

    def put(component: str, level: str) -> None:
        if levels.get(component, level) != level:
            raise PromptError(f"prompt {text!r} gives {component} two levels: {levels[component]!r} and {level!r}")
        levels[component] = level

    for raw in _SPLIT.split(text.strip(_STRIP)):
        part = raw.strip(_STRIP)
        if not part:
            continue
        key = canonical_phrase(part)
        if key not in lookup:
            unknown.append(part)
            continue
        if key == shared:
            n_shared += 1
            continue
        for component, level in lookup[key]:
            put(component, level)

    if n_shared > 2:
        raise PromptError(f"prompt {text!r} holds {cfg.resize2.word!r} {n_shared} times; at most 2 make sense")
    if n_shared >= 1:
        put("resize2", "downsample")
    if n_shared == 2 and counts_resize1:
        put("resize1", "downsample")
    if unknown:
        if strict:
            raise PromptError(
                f"unknown phrase {unknown[0]!r} in prompt {text!r}. Known phrases: "
                f"{', '.join(vocabulary(cfg))}. To pass free text to the text encoder, use lenient "
                "mode (strict=False, or --free-text on the command line)."
            )
        warnings.warn(f"prompt phrases outside the vocabulary kept as free text: {unknown}", stacklevel=2)
    ordered = {c: levels[c] for c in COMPONENTS if c in levels}
    return ParsedPrompt(ordered, tuple(unknown))
