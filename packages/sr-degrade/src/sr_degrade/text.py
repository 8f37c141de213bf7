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
        return f"{type(self).__name__}({dict(self)!r}, unknown={self.unknown!r})"


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


# ---- prompts in a user's own words (issue 11) ---------------------------------------------------

#: The level of a component the user (or the estimator) says is absent.
NONE = "none"


def canonical_prompt(
    levels: dict[str, str], cfg: DegradationConfig = _DEFAULT, omission: bool = True
) -> tuple[str, list[str]]:
    """The original-format prompt of {component: level}: the paper's order, "none" and missing
    components left out, resize2's phrase always last. Returns (prompt, notes).

    With `omission=False` (a model trained without omitted operations, so its prompts always name
    every component) a "none" becomes the lightest level ("unchange" for resize1), with a note.
    """
    notes: list[str] = []
    items: list[str] = []
    for comp in FIRST_OPS:
        level = levels.get(comp)
        if level is None:
            continue
        if level == NONE:
            if omission:
                continue
            level = "unchange" if comp == "resize1" else LEVELS[0]
            notes.append(
                f"{comp} 'none' given as {phrase(comp, level, cfg)!r}: the model was trained without omitted ops"
            )
        items.append(phrase(comp, level, cfg))
    items.append(phrase("resize2", "downsample", cfg))
    return ", ".join(items), notes


class Normalised(ParsedPrompt):
    """{component: level or "none"} read from free text; `unknown` holds the words not understood."""


# Rules of the normaliser. Multi-word phrases are matched first (on the space-joined words of a
# clause); then each word is a component word (its level from the clause's intensity words, medium
# when none is said), a "none" word (the component is named absent), an intensity word, a negation
# or filler. Anything else is reported back, never silently dropped.
_PHRASES: tuple[tuple[str, str, str | None], ...] = (
    # (words, component, level or None = from the intensity words)
    ("out of focus", "blur", None),
    ("in focus", "blur", NONE),
    ("blown up", "resize1", "upsample"),
    ("zoomed in", "resize1", "upsample"),
    ("original size", "resize1", "unchange"),
    ("native resolution", "resize1", "unchange"),
    ("not resized", "resize1", "unchange"),
    ("low quality", "jpeg", "heavy"),
    ("poor quality", "jpeg", "heavy"),
    ("bad quality", "jpeg", "heavy"),
    ("high quality", "jpeg", "light"),
    ("good quality", "jpeg", "light"),
)
_WORDS: dict[str, tuple[str, str | None]] = {}
for _comp, _level, _words in (
    ("blur", None, "blur blurs blurry blurred blurring blurriness soft softened fuzzy smeared smudged defocused "
     "unfocused defocus hazy"),
    ("blur", NONE, "sharp crisp focused"),
    ("noise", None, "noise noises noisy grain grains grainy graininess speckle speckles speckled static sensor iso"),
    ("noise", NONE, "clean denoised noiseless"),
    ("jpeg", None, "jpeg jpg jpegs compression compressed blocky blocks blockiness artifacts artefacts artifact "
     "artefact macroblocking ringing mosquito"),
    ("jpeg", NONE, "uncompressed lossless"),
    ("resize1", "upsample", "enlarged upscaled upsampled upsample upscale enlarge magnified stretched zoomed "
     "interpolated"),
    ("resize1", "downsample", "downscaled downsampled downsized shrunk shrunken reduced minified downscale"),
    ("resize1", "unchange", "unchanged unchange unresized"),
):  # fmt: skip
    for _w in _words.split():
        _WORDS[_w] = (_comp, _level)
_INTENSITY: dict[str, str] = {}
for _level, _words in (
    ("heavy", "very heavy heavily extremely extreme strong strongly severe severely lots lot badly terribly "
     "really super massive massively awful intense intensely much high highly"),
    ("light", "slightly slight bit little light lightly mild mildly faint faintly barely somewhat minor subtle "
     "subtly touch hint weak low"),
    ("medium", "moderate moderately medium noticeable noticeably fairly quite some visible"),
):  # fmt: skip
    for _w in _words.split():
        _INTENSITY[_w] = _level
_NEGATIONS = frozenset("no not without zero free non".split())
_FILLER = frozenset(
    "a an the of from as to in on at by it its is was has have this that image photo picture shot saved looks "
    "look also then quality q sigma level".split()
)
_CLAUSES = re.compile(r"[,;\n]|\band\b|\bwith\b|\bthen\b|\bbut\b|\bplus\b")
_RANK = {lvl: i for i, lvl in enumerate((NONE, *LEVELS))}


def _number_level(comp: str, value: float, cfg: DegradationConfig) -> str:
    if comp == "jpeg":  # a quality: lower is heavier
        return LEVELS[len(LEVELS) - 1 - bin_index(value, cfg.jpeg.bin_edges)]
    if comp == "noise":  # a Gaussian sigma on the 0..255 scale
        return LEVELS[bin_index(value, cfg.noise.gaussian_bin_edges)]
    return LEVELS[bin_index(value, cfg.blur.bin_edges)]  # a blur sigma in pixels


def normalise_prompt(text: str, cfg: DegradationConfig = _DEFAULT) -> Normalised:
    """Map a prompt in a user's own words onto the vocabulary: {component: level or "none"}.

    A prompt already in the vocabulary is parsed exactly (`parse_prompt`). Otherwise the text is
    split into clauses (commas, semicolons, "and", "with", "then", "but"); in each, component words
    ("blurry", "grainy", "blocky", "jpeg", "enlarged", ...) take the clause's intensity ("very" ->
    heavy, "slightly" -> light, none said -> medium), a negation ("no noise") or a "none" word
    ("sharp", "clean", "uncompressed") says the component is absent, and a number after "quality"
    or "sigma" is binned like the degradation's own parameters. When two clauses give one component
    different levels, the heavier wins. Words it cannot place are returned in `.unknown`.
    """
    if not isinstance(text, str):
        raise PromptError(f"a prompt must be text, got {type(text).__name__}")
    try:
        exact = parse_prompt(text, strict=True, cfg=cfg)
        return Normalised({c: lvl for c, lvl in exact.items() if c != "resize2"})
    except PromptError:
        pass
    levels: dict[str, str] = {}
    unknown: list[str] = []
    for clause in _CLAUSES.split(text.lower()):
        words = re.findall(r"[a-z]+|\d+(?:\.\d+)?", clause.replace("-", " "))
        if not words:
            continue
        found: list[tuple[str, str | None]] = []
        used = [False] * len(words)
        joined = " ".join(words)
        for ph, comp, level in _PHRASES:
            pos = f" {joined} ".find(f" {ph} ")
            if pos >= 0:
                start = joined[:pos].count(" ") if pos else 0
                n = ph.count(" ") + 1
                if not any(used[start : start + n]):
                    found.append((comp, level))
                    for i in range(start, start + n):
                        used[i] = True
        intensity: list[str] = []
        negated = False
        number: float | None = None
        for i, w in enumerate(words):
            if used[i]:
                continue
            if w in _WORDS:
                found.append(_WORDS[w])
            elif w in _INTENSITY:
                intensity.append(_INTENSITY[w])
            elif w in _NEGATIONS:
                negated = True
            elif w[0].isdigit():
                number = float(w)
            elif w not in _FILLER:
                unknown.append(w)
                continue
            used[i] = True
        if not found:
            # Intensity or negation without a component: the whole clause is not understood.
            unknown += [w for w, u in zip(words, used) if u and w not in _FILLER and w not in unknown]
            continue
        said = max(intensity, key=_RANK.__getitem__) if intensity else "medium"
        # A level a phrase states ("high quality" jpeg) beats the one its bare word implies ("jpeg").
        stated = {comp for comp, level in found if level not in (None, NONE)}
        for comp, level in found:
            if level is None and comp in stated:
                continue
            if level is None:
                level = NONE if negated else said
                if number is not None and not negated:
                    level = _number_level(comp, number, cfg)
            elif level == NONE and negated:
                level = "medium"  # "not sharp": some blur
            old = levels.get(comp)
            if old is None or (old in _RANK and level in _RANK and _RANK[level] > _RANK[old]):
                levels[comp] = level
    ordered = {c: levels[c] for c in FIRST_OPS if c in levels}
    return Normalised(ordered, tuple(unknown))
