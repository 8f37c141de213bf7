"""The one typed config of the degradation model and its words (DESIGN.md sections 3 and 4).

`DegradationConfig()` holds the paper's settings (section 4.1.1) plus the choices the paper leaves
open, marked (ours) in the design: the keep probability of resize1, the gray-noise probability, the
Poisson scale, equal-thirds bin edges, and the phrases. Sampling (`sample_params`), application
(`degrade`) and wording (`describe`, `bins`, `parse_prompt`) all read this object and nothing else.

A config is frozen and validated on construction: every error names the field and the rule.
It round-trips through plain dicts, YAML and JSON (`from_dict`, `to_dict`, `load`, `dump`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError

#: The first four operations, in the paper's fixed order; resize2 always comes last.
FIRST_OPS: tuple[str, ...] = ("blur", "resize1", "noise", "jpeg")
OPS: tuple[str, ...] = FIRST_OPS + ("resize2",)
#: Levels of the binned components (blur, noise, jpeg), from weakest to strongest.
LEVELS: tuple[str, ...] = ("light", "medium", "heavy")
#: Levels of resize1: gamma1 > 1, gamma1 < 1, gamma1 == 1 (kept).
RESIZE1_LEVELS: tuple[str, ...] = ("upsample", "downsample", "unchange")
#: Interpolation modes a resize may use (OpenCV's, by name).
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic", "nearest", "lanczos")
BLUR_KINDS: tuple[str, ...] = ("iso", "aniso")
NOISE_KINDS: tuple[str, ...] = ("gaussian", "poisson")

_PROB_TOL = 1e-6
#: Widest blur kernel a config may name (the paper's widest is 21). The kernel and its convolution
#: grow with the square of the width: a width of 200001 would allocate 149 GiB before failing.
MAX_KERNEL_SIZE = 101
#: Largest resize1 factor gamma1 (the paper's is 1.5): the upsampled image is held in float32, so a
#: factor of 100 on a 512 crop would need 9 GiB per worker.
MAX_RESIZE1_FACTOR = 4.0


def _fail(section: str, name: str, rule: str, value: Any) -> ConfigError:
    where = f"{section}.{name}" if section else name
    return ConfigError(f"config field '{where}' = {value!r}: {rule}")


def _check_range(section: str, name: str, value: tuple, lo_min: float | None = None) -> None:
    if len(value) != 2:
        raise _fail(section, name, "expected two numbers [lo, hi]", list(value))
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise _fail(section, name, "needs finite lo < hi", list(value))
    if lo_min is not None and lo < lo_min:
        raise _fail(section, name, f"lo must be >= {lo_min}", list(value))


def _check_prob(section: str, name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise _fail(section, name, "a probability must lie in [0, 1]", p)


def _check_choices(section: str, name: str, probs: dict, allowed: tuple[str, ...]) -> dict:
    """Validate {choice: probability} and return it in the canonical order of `allowed`.

    The canonical order makes sampling independent of the key order in a YAML file.
    """
    if not probs:
        raise _fail(section, name, f"needs at least one of {list(allowed)}", probs)
    unknown = [k for k in probs if k not in allowed]
    if unknown:
        raise _fail(section, name, f"unknown choice {unknown[0]!r}; allowed: {list(allowed)}", probs)
    for k, p in probs.items():
        _check_prob(section, f"{name}.{k}", p)
    total = sum(probs.values())
    if abs(total - 1.0) > _PROB_TOL:
        raise _fail(section, name, f"probabilities must sum to 1 (they sum to {total:.6g})", probs)
    return {k: float(probs[k]) for k in allowed if k in probs}


def _check_words(section: str, name: str, words: tuple, n: int = 3) -> None:
    if len(words) != n:
        raise _fail(section, name, f"needs exactly {n} phrases (one per level)", list(words))
    for w in words:
        if not isinstance(w, str) or not canonical_phrase(w) or any(c in w for c in ",;[]"):
            raise _fail(section, name, "phrases need letters or digits and no , ; [ ]", list(words))


def _resolve_edges(section: str, name: str, edges: tuple | None, rng: tuple) -> tuple:
    """Equal thirds of `rng` unless explicit edges are given; explicit edges must span `rng`."""
    lo, hi = float(rng[0]), float(rng[1])
    if edges is None:
        step = (hi - lo) / 3.0
        return (lo, lo + step, lo + 2.0 * step, hi)
    edges = tuple(float(e) for e in edges)
    if len(edges) != 4:
        raise _fail(section, name, "needs 4 ascending edges for 3 bins", list(edges))
    if any(not a < b for a, b in itertools.pairwise(edges)):
        raise _fail(section, name, "edges must be strictly ascending", list(edges))
    if not (math.isclose(edges[0], lo) and math.isclose(edges[-1], hi)):
        raise _fail(section, name, f"edges must start at {lo} and end at {hi} (the range)", list(edges))
    return edges


@dataclass(frozen=True)
class BlurConfig:
    """Isotropic / anisotropic Gaussian blur (paper 4.1.1)."""

    section: ClassVar[str] = "blur"
    kinds: dict[str, float] = field(default_factory=lambda: {"iso": 0.5, "aniso": 0.5})
    #: Odd kernel widths eta, drawn uniformly.
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    #: Standard deviation in pixels, U[lo, hi]; anisotropic draws sigma_x and sigma_y independently.
    sigma: tuple[float, float] = (0.2, 3.0)
    #: Rotation of the anisotropic kernel in radians, U[lo, hi].
    rotation: tuple[float, float] = (0.0, math.pi)
    #: Bin edges over the nominal sigma (isotropic sigma, anisotropic mean); None = equal thirds.
    bin_edges: tuple[float, ...] | None = None
    words: tuple[str, str, str] = ("light blur", "medium blur", "heavy blur")

    def __post_init__(self) -> None:
        s = self.section
        object.__setattr__(self, "kinds", _check_choices(s, "kinds", self.kinds, BLUR_KINDS))
        if not self.kernel_sizes:
            raise _fail(s, "kernel_sizes", "needs at least one width", list(self.kernel_sizes))
        for k in self.kernel_sizes:
            if isinstance(k, bool) or int(k) != k or k < 1 or k % 2 == 0:
                raise _fail(s, "kernel_sizes", f"widths must be odd and >= 1 ({k} is not)", list(self.kernel_sizes))
            if k > MAX_KERNEL_SIZE:
                rule = f"widths must be at most {MAX_KERNEL_SIZE} pixels ({k} is not; the paper's widest is 21)"
                raise _fail(s, "kernel_sizes", rule, list(self.kernel_sizes))
        _check_range(s, "sigma", self.sigma, lo_min=1e-3)
        _check_range(s, "rotation", self.rotation)
        object.__setattr__(self, "bin_edges", _resolve_edges(s, "bin_edges", self.bin_edges, self.sigma))
        _check_words(s, "words", self.words)


@dataclass(frozen=True)
class Resize1Config:
    """The first resize, up or down by gamma1 (or kept)."""

    section: ClassVar[str] = "resize1"
    modes: dict[str, float] = field(default_factory=lambda: {"area": 0.3, "bilinear": 0.4, "bicubic": 0.3})
    #: Probability that gamma1 = 1 ("unchange"), ours.
    p_keep: float = 0.1
    #: gamma1 ~ U[lo, hi] when not kept.
    factor: tuple[float, float] = (0.15, 1.5)
    #: Phrase for each level: upsample (gamma1 > 1), downsample (gamma1 < 1), unchange (kept).
    words: dict[str, str] = field(
        default_factory=lambda: {"upsample": "upsample", "downsample": "downsample", "unchange": "unchange"}
    )

    def __post_init__(self) -> None:
        s = self.section
        object.__setattr__(self, "modes", _check_choices(s, "modes", self.modes, RESIZE_MODES))
        _check_prob(s, "p_keep", self.p_keep)
        _check_range(s, "factor", self.factor, lo_min=1e-3)
        if self.factor[1] > MAX_RESIZE1_FACTOR:
            rule = f"hi must be at most {MAX_RESIZE1_FACTOR} (the paper's is 1.5)"
            raise _fail(s, "factor", rule, list(self.factor))
        if set(self.words) != set(RESIZE1_LEVELS):
            raise _fail(s, "words", f"needs exactly the keys {list(RESIZE1_LEVELS)}", self.words)
        _check_words(s, "words", tuple(self.words[k] for k in RESIZE1_LEVELS))
        object.__setattr__(self, "words", {k: self.words[k] for k in RESIZE1_LEVELS})


@dataclass(frozen=True)
class NoiseConfig:
    """Gaussian or Poisson noise, in colour or gray."""

    section: ClassVar[str] = "noise"
    kinds: dict[str, float] = field(default_factory=lambda: {"gaussian": 0.5, "poisson": 0.5})
    #: Probability of gray noise (one noise field for all channels), Real-ESRGAN's 0.4 (ours).
    p_gray: float = 0.4
    #: Gaussian sigma on the 0..255 scale, U[lo, hi].
    gaussian_sigma: tuple[float, float] = (1.0, 30.0)
    #: Poisson scale as Real-ESRGAN defines it, U[lo, hi].
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gaussian_bin_edges: tuple[float, ...] | None = None
    poisson_bin_edges: tuple[float, ...] | None = None
    words: tuple[str, str, str] = ("light noise", "medium noise", "heavy noise")

    def __post_init__(self) -> None:
        s = self.section
        object.__setattr__(self, "kinds", _check_choices(s, "kinds", self.kinds, NOISE_KINDS))
        _check_prob(s, "p_gray", self.p_gray)
        _check_range(s, "gaussian_sigma", self.gaussian_sigma, lo_min=0.0)
        _check_range(s, "poisson_scale", self.poisson_scale, lo_min=0.0)
        edges = _resolve_edges(s, "gaussian_bin_edges", self.gaussian_bin_edges, self.gaussian_sigma)
        object.__setattr__(self, "gaussian_bin_edges", edges)
        edges = _resolve_edges(s, "poisson_bin_edges", self.poisson_bin_edges, self.poisson_scale)
        object.__setattr__(self, "poisson_bin_edges", edges)
        _check_words(s, "words", self.words)


@dataclass(frozen=True)
class JpegConfig:
    """JPEG compression; lower quality is heavier."""

    section: ClassVar[str] = "jpeg"
    #: Integer quality q ~ U{lo, ..., hi}.
    quality: tuple[int, int] = (30, 95)
    #: Edges over q; the lowest bin is "heavy". None = equal thirds.
    bin_edges: tuple[float, ...] | None = None
    words: tuple[str, str, str] = ("light compression", "medium compression", "heavy compression")

    def __post_init__(self) -> None:
        s = self.section
        _check_range(s, "quality", self.quality)
        lo, hi = self.quality
        if int(lo) != lo or int(hi) != hi or lo < 1 or hi > 100:
            raise _fail(s, "quality", "needs integers with 1 <= lo < hi <= 100", list(self.quality))
        object.__setattr__(self, "quality", (int(lo), int(hi)))
        object.__setattr__(self, "bin_edges", _resolve_edges(s, "bin_edges", self.bin_edges, self.quality))
        _check_words(s, "words", self.words)


@dataclass(frozen=True)
class Resize2Config:
    """The final resize to exactly 1/scale of the HR size; never omitted."""

    section: ClassVar[str] = "resize2"
    modes: dict[str, float] = field(default_factory=lambda: {"area": 0.3, "bilinear": 0.4, "bicubic": 0.3})
    word: str = "downsample"

    def __post_init__(self) -> None:
        s = self.section
        object.__setattr__(self, "modes", _check_choices(s, "modes", self.modes, RESIZE_MODES))
        _check_words(s, "word", (self.word,), n=1)


@dataclass(frozen=True)
class DegradationConfig:
    """Everything the degradation model samples from and every word its prompts use.

    The defaults are the paper's settings. Flexible formats (paper 4.2.3) are options of the same
    model: `shuffle_order` draws a random order of the first four operations per sample, and
    `p_omit` drops each of them with its own probability (resize2 is never omitted).
    """

    #: SR factor: the LR image is exactly (H // scale, W // scale).
    scale: int = 4
    #: Order of the first four operations when `shuffle_order` is off.
    order: tuple[str, ...] = FIRST_OPS
    shuffle_order: bool = False
    #: Per-operation omission probability; resize2 is never omitted.
    p_omit: dict[str, float] = field(default_factory=lambda: {op: 0.0 for op in FIRST_OPS})
    blur: BlurConfig = field(default_factory=BlurConfig)
    resize1: Resize1Config = field(default_factory=Resize1Config)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)
    resize2: Resize2Config = field(default_factory=Resize2Config)

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or int(self.scale) != self.scale or self.scale < 1:
            raise _fail("", "scale", "needs an integer >= 1", self.scale)
        if sorted(self.order) != sorted(FIRST_OPS):
            raise _fail("", "order", f"needs each of {list(FIRST_OPS)} exactly once", list(self.order))
        unknown = [k for k in self.p_omit if k not in FIRST_OPS]
        if unknown:
            rule = f"unknown op {unknown[0]!r}; only {list(FIRST_OPS)} can be omitted (resize2 never is)"
            raise _fail("", "p_omit", rule, self.p_omit)
        for k, p in self.p_omit.items():
            _check_prob("p_omit", k, p)
        object.__setattr__(self, "p_omit", {op: float(self.p_omit.get(op, 0.0)) for op in FIRST_OPS})
        self._check_vocabulary()

    def _check_vocabulary(self) -> None:
        # Every phrase must name one (component, level), except that resize1's "downsample" may
        # equal resize2's phrase: parse_prompt tells them apart by counting (DESIGN.md section 4).
        seen: dict[str, str] = {}
        for component, level, phrase in self.phrases():
            key = canonical_phrase(phrase)
            owner = f"{component}.{level}"
            shared = {seen.get(key), owner} == {"resize1.downsample", "resize2.downsample"}
            if key in seen and not shared:
                raise _fail("", "words", f"phrase {phrase!r} is used by both {seen[key]} and {owner}", phrase)
            seen.setdefault(key, owner)

    def phrases(self) -> list[tuple[str, str, str]]:
        """Every (component, level, phrase) of the vocabulary, in prompt order."""
        out = [("blur", lvl, w) for lvl, w in zip(LEVELS, self.blur.words)]
        out += [("resize1", lvl, self.resize1.words[lvl]) for lvl in RESIZE1_LEVELS]
        out += [("noise", lvl, w) for lvl, w in zip(LEVELS, self.noise.words)]
        out += [("jpeg", lvl, w) for lvl, w in zip(LEVELS, self.jpeg.words)]
        out.append(("resize2", "downsample", self.resize2.word))
        return out

    # ---- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists, dicts and scalars (YAML/JSON-ready); `from_dict` inverts it."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DegradationConfig:
        """Build from a (possibly partial) dict; missing fields keep their defaults."""
        return _from_plain(cls, data, "")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def dump(self, path: str | Path) -> None:
        """Write as YAML, or JSON when the file name ends in .json."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else self.to_yaml()
        path.write_text(text)

    @classmethod
    def load(cls, path: str | Path) -> DegradationConfig:
        """Read a YAML or JSON file (a partial file overrides the defaults it names)."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix or 'YAML'}: {e}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of fields, not {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def canonical_phrase(text: str) -> str:
    """Matching form of a phrase: lower case letters and digits only ("Up-Sample" -> "upsample",
    "Medium-Compression" -> "mediumcompression"), so spacing and hyphenation never matter."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def dataclass_to_dict(obj: Any) -> Any:
    """A (nested) dataclass as plain dicts, lists and scalars, ready for YAML or JSON."""
    return _to_plain(obj)


def dataclass_from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a (possibly partial) dict, converting lists to tuples and nested
    dicts to nested dataclasses by the annotations; unknown keys and wrong types raise a
    ConfigError naming the dotted field (`where` prefixes it). Other typed configs reuse this."""
    return _from_plain(cls, data, where)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    return obj


def _from_plain(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config field '{where or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; known keys here: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Turn a YAML/JSON value into the annotated type, or raise a ConfigError naming `path`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _from_plain(tp, value, path)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{path}' must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{path}' must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field '{path}' must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as text; take it as the number it plainly is.
            try:
                value = float(value) if tp is float else int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config field '{path}' must be a number, got {value!r}")
        if tp is int and int(value) != value:
            raise ConfigError(f"config field '{path}' must be an integer, got {value!r}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field '{path}' must be text, got {value!r}")
        return value
    return value  # Any and other annotations pass through
