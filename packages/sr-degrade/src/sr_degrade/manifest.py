"""Named sources' manifests: the schema of `data_manifests/*.yaml` (what a dataset is called, where it comes
from, what a complete copy holds) parsed into frozen dataclasses, and the bundled manifests listed and
loaded. Opening a source and checking a copy against its manifest are `sources`' jobs.
"""

from __future__ import annotations

import os
import posixpath
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import SourceError

MANIFEST_SCHEMA = 1
#: How many keys error messages and summaries show before "... and N more".
SHOW = 5


def _short(keys: Sequence[str], limit: int = SHOW) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit:,} more" if len(keys) > limit else "")


@dataclass(frozen=True)
class FileRange:
    """Numbered file names: `format` with `{i}` for first..last (inclusive) and `{group}` = i rounded up to
    a multiple of `group_size` (LSDIR's 0001000/0000001.png)."""

    format: str
    first: int
    last: int
    group_size: int = 1

    def keys(self) -> list[str]:
        g = self.group_size
        return [self.format.format(i=i, group=-(-i // g) * g) for i in range(self.first, self.last + 1)]

    def __len__(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Variant:
    """One way a copy of a split can be laid out below the root."""

    name: str
    base: str  #: folder relative to the root that keys are relative to ("." for the root)
    patterns: tuple[str, ...]  #: relative to base; "/" separated; fnmatch components and "**"
    files: tuple[str, ...] | FileRange | None  #: the complete set of keys, when known

    def expected_keys(self) -> list[str] | None:
        if self.files is None:
            return None
        return self.files.keys() if isinstance(self.files, FileRange) else list(self.files)


@dataclass(frozen=True)
class ManifestSplit:
    name: str
    count: int | None  #: None: unknown, only "at least one image" is checked
    layout: str  #: the expected layout in words
    variants: tuple[Variant, ...]  #: tried in order; the first that finds an image is used
    aliases: tuple[str, ...] = ()
    #: (key, reason) of files found unreadable when the manifest was written (informative)
    unreadable: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    homepage: str
    obtain: str  #: how to get it, one sentence
    licence: str
    root_env: str  #: environment variable that may hold the root
    splits: tuple[ManifestSplit, ...]
    archives: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    @property
    def split_names(self) -> list[str]:
        return [s.name for s in self.splits]

    def split(self, name: str) -> ManifestSplit:
        """The split called `name` (or one of its aliases), any case; SourceError listing them otherwise."""
        want = name.lower()
        for s in self.splits:
            if want == s.name.lower() or want in (a.lower() for a in s.aliases):
                return s
        listed = ", ".join(s.name + (f" (or {', '.join(s.aliases)})" if s.aliases else "") for s in self.splits)
        raise SourceError(f"{self.name} has no split {name!r}; its splits: {listed}")


_TOP_KEYS = {"schema", "name", "description", "homepage", "obtain", "archives", "licence", "root_env"}
_TOP_KEYS |= {"splits", "notes"}
_SPLIT_KEYS = {"count", "layout", "aliases", "patterns", "files", "variants", "unreadable"}
_VARIANT_KEYS = {"name", "base", "patterns", "files"}
_RANGE_KEYS = {"format", "first", "last", "group_size"}


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper() + "_ROOT"


def _check_pattern(pattern: Any, where: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise SourceError(f"{where}: a pattern must be a non-empty string, got {pattern!r}")
    parts = pattern.split("/")
    if pattern.startswith("/") or "\\" in pattern or any(p in ("", ".", "..") for p in parts):
        raise SourceError(f"{where}: pattern {pattern!r} must be relative, '/'-separated, without '.' or '..' parts")
    if any("**" in p and p != "**" for p in parts):
        raise SourceError(f"{where}: in pattern {pattern!r}, '**' must be a whole path component")
    return pattern


def _check_base(base: Any, where: str) -> str:
    if not isinstance(base, str) or not base.strip():
        raise SourceError(f"{where}: base must be a folder relative to the root ('.' for the root), got {base!r}")
    norm = posixpath.normpath(base)
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or "\\" in base:
        raise SourceError(f"{where}: base {base!r} must be a folder inside the root")
    return norm


def _parse_files(value: Any, where: str) -> tuple[str, ...] | FileRange | None:
    if value is None:
        return None
    if isinstance(value, list):
        keys = tuple(str(_check_pattern(k, where)) for k in value)
        dup = [k for k, n in Counter(keys).items() if n > 1]
        if dup:
            raise SourceError(f"{where}: files lists {_short(dup)} more than once")
        return tuple(sorted(keys))
    if isinstance(value, dict):
        unknown = set(value) - _RANGE_KEYS
        if unknown or not {"format", "first", "last"} <= set(value):
            raise SourceError(f"{where}: a files range has format, first, last and optionally group_size")
        fmt, first, last, group = value["format"], value["first"], value["last"], value.get("group_size", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (first, last, group)):
            raise SourceError(f"{where}: first, last and group_size of a files range must be integers")
        if not (isinstance(fmt, str) and 0 <= first <= last and group >= 1):
            raise SourceError(f"{where}: a files range needs a format string, 0 <= first <= last, group_size >= 1")
        # Only the plain fields i and group: a format string may not reach attributes or items.
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None}
        except ValueError as e:
            raise SourceError(f"{where}: bad files format {fmt!r}: {e}") from None
        if not fields or not fields <= {"i", "group"}:
            raise SourceError(f"{where}: a files format may only use the fields {{i}} and {{group}}, got {fmt!r}")
        return FileRange(fmt, first, last, group)
    raise SourceError(f"{where}: files must be a list of paths or a numbered range, got {type(value).__name__}")


def _text(d: dict, key: str, where: str, default: str = "") -> str:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise SourceError(f"{where}: {key} must be text, got {type(value).__name__}")
    return " ".join(value.split())


def _parse_split(name: str, d: Any, where: str) -> ManifestSplit:
    where = f"{where}, split {name}"
    if not isinstance(d, dict):
        raise SourceError(f"{where}: expected a mapping")
    if set(d) - _SPLIT_KEYS:
        raise SourceError(f"{where}: unknown fields {sorted(set(d) - _SPLIT_KEYS)}; known: {sorted(_SPLIT_KEYS)}")
    count = d.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise SourceError(f"{where}: count must be a whole number >= 0, or null when unknown")
    patterns = d.get("patterns")
    files = _parse_files(d.get("files"), where)
    raw_variants = d.get("variants") or [{"name": "default", "base": "."}]
    if not isinstance(raw_variants, list):
        raise SourceError(f"{where}: variants must be a list")
    variants = []
    for i, v in enumerate(raw_variants):
        vwhere = f"{where}, variant {i + 1}"
        if not isinstance(v, dict) or set(v) - _VARIANT_KEYS:
            raise SourceError(f"{vwhere}: a variant is a mapping of {sorted(_VARIANT_KEYS)}")
        pats = v.get("patterns", patterns)
        if isinstance(pats, str):
            pats = [pats]
        if not pats or not isinstance(pats, list):
            raise SourceError(f"{vwhere}: no patterns (give them on the split or the variant)")
        vfiles = _parse_files(v["files"], vwhere) if "files" in v else files
        if count is not None and vfiles is not None and len(vfiles) != count:
            raise SourceError(f"{vwhere}: lists {len(vfiles)} files but the split's count is {count}")
        variants.append(
            Variant(
                name=str(v.get("name", f"variant {i + 1}")),
                base=_check_base(v.get("base", "."), vwhere),
                patterns=tuple(_check_pattern(p, vwhere) for p in pats),
                files=vfiles,
            )
        )
    if count is None:
        # With every variant's files known, the count is known too.
        sizes = {len(v.files) for v in variants if v.files is not None}
        if len(sizes) == 1 and all(v.files is not None for v in variants):
            count = sizes.pop()
    aliases = d.get("aliases") or []
    unreadable = d.get("unreadable") or []
    if not isinstance(aliases, list) or not isinstance(unreadable, list):
        raise SourceError(f"{where}: aliases and unreadable must be lists")
    return ManifestSplit(
        name=name,
        count=count,
        layout=_text(d, "layout", where),
        variants=tuple(variants),
        aliases=tuple(str(a) for a in aliases),
        unreadable=tuple((str(u.get("key", "")), str(u.get("reason", ""))) for u in unreadable if isinstance(u, dict)),
    )


def parse_manifest(data: Any, path: Path | None = None) -> Manifest:
    """A manifest from its parsed YAML; SourceError naming the file and the field when malformed."""
    where = str(path) if path else "manifest"
    if not isinstance(data, dict):
        raise SourceError(f"{where}: a manifest is a YAML mapping (see data_manifests/README.md)")
    if set(data) - _TOP_KEYS:
        raise SourceError(f"{where}: unknown fields {sorted(set(data) - _TOP_KEYS)}; known: {sorted(_TOP_KEYS)}")
    if data.get("schema", MANIFEST_SCHEMA) != MANIFEST_SCHEMA:
        raise SourceError(f"{where}: schema {data.get('schema')!r}; this sr-degrade reads schema {MANIFEST_SCHEMA}")
    name = _text(data, "name", where)
    if not name or any(c in name for c in "/\\") or name != name.strip():
        raise SourceError(f"{where}: name must be a non-empty word without slashes, got {data.get('name')!r}")
    splits = data.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise SourceError(f"{where}: splits must map split names to their expectations")
    archives, notes = data.get("archives") or [], data.get("notes") or []
    if not isinstance(archives, list) or not isinstance(notes, list):
        raise SourceError(f"{where}: archives and notes must be lists")
    root_env = _text(data, "root_env", where) or _env_name(name)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", root_env):
        raise SourceError(f"{where}: root_env {root_env!r} is not an environment variable name")
    return Manifest(
        name=name,
        description=_text(data, "description", where),
        homepage=_text(data, "homepage", where),
        obtain=_text(data, "obtain", where),
        licence=_text(data, "licence", where),
        root_env=root_env,
        splits=tuple(_parse_split(str(k), v, where) for k, v in splits.items()),
        archives=tuple(str(a) for a in archives),
        notes=tuple(" ".join(str(n).split()) for n in notes),
        path=path,
    )


def manifest_dir() -> Path:
    """The bundled manifests (`data_manifests/` of the repository, `sr_degrade/manifests` when installed)."""
    return Path(str(resources.files("sr_degrade") / "manifests"))


@cache
def _load_path(path: Path, mtime_ns: int) -> Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SourceError(f"{path}: cannot read the manifest ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SourceError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return parse_manifest(data, path)


def _load_file(path: Path) -> Manifest:
    path = Path(os.path.abspath(path))
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise SourceError(f"{path}: cannot read the manifest ({e.strerror or e})") from None
    return _load_path(path, mtime)


def _bundled() -> dict[str, Manifest]:
    folder = manifest_dir()
    if not folder.is_dir():
        return {}
    found = {}
    for p in sorted(folder.glob("*.yaml")):
        m = _load_file(p)
        found[m.name.lower()] = m
    return found


def list_manifests() -> list[str]:
    """Names of the named sources (the bundled manifests), sorted case-insensitively."""
    return sorted((m.name for m in _bundled().values()), key=str.lower)


def _is_manifest_path(name: str) -> bool:
    return name.lower().endswith((".yaml", ".yml"))


def load_manifest(name: str | Path) -> Manifest:
    """A bundled manifest by name, any case ("lsdir", "DIV2K-val"), or a manifest file by path."""
    if isinstance(name, Path) or _is_manifest_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise SourceError(f"{path}: no such manifest file")
        return _load_file(path)
    bundled = _bundled()
    if name.lower() in bundled:
        return bundled[name.lower()]
    raise SourceError(f"no named source {name!r}; named sources: {', '.join(list_manifests()) or '(none installed)'}")
