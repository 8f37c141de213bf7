"""Where HR images come from: named datasets checked against manifests, any folder, a list file, the samples.

`open_source(src, root=..., split=...)` turns what a user types after `--src` into a `Source`: a sorted
tuple of `SourceImage(key, path)`. The key is the image's path relative to the source root with forward
slashes; it seeds each sample (DESIGN.md section 3), names its shard entries and decides the holdout, so it
never depends on where the data lives or on the machine.

What `src` may be, tried in this order:

- `sample`: the bundled photos (`sr_degrade.samples`); key = file name.
- a path to a manifest file (`*.yaml`, `*.yml`): a named source described by that file.
- a named source (`list_manifests()`: LSDIR, DIV2K-val, Urban100, Manga109, RealSR; any case), read from
  `--root` or the environment variable its manifest names, and (with `check=True`) compared with what
  its manifest expects, without decoding. Something that looks like a path (holds a slash, starts with
  a dot or ~) is never taken for a name.
- an existing folder: every image below it, recursively; extensions from `IMAGE_EXTENSIONS`, any case.
- an fsspec URL of a folder (`s3://bucket/photos/`, `gs://...`, `http(s)://...`; `sr_degrade.storage`):
  every image object below it, keyed like the same files in a local folder (the path relative to the
  folder), hidden entries skipped; `read_image` reads each through `sr_degrade.storage`.
- an existing file: a list file, one image path per line.

Folder walking (folder sources and manifest patterns alike): entries whose name starts with a dot are
skipped, files and folders; symbolic links are followed, to files and to folders (datasets are often
assembled from links), keyed by the path through the link, and a link that leads back into a folder
being walked is not entered again, so link loops end; broken links are skipped. A folder that cannot be
listed is skipped with a warning.

List files: blank lines and lines starting with `#` are skipped; backslashes count as slashes. A relative
path is read relative to the list file's folder and its key is the line, normalised (`a/./b.png` ->
`a/b.png`). Absolute paths are keyed relative to the deepest folder that holds all the absolute paths of
the list (so `/data/x/a.png` and `/data/y/b.png` give `x/a.png` and `y/b.png`; a single absolute path
gives its file name). A listed file that does not exist stays in the source (the builder reports it as
unreadable); two lines with the same key are refused.

Manifests (`data_manifests/*.yaml`, schema in `data_manifests/README.md`) say where a dataset comes from
and what a complete copy holds. `check_manifest` compares a copy with its manifest (optionally decoding
every file), `write_manifest` pins any folder as a new named source.
"""

from __future__ import annotations

import multiprocessing
import os
import posixpath
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from .errors import ImageError, SourceError
from .imageio import IMAGE_EXTENSIONS, read_image
from .manifest import (  # noqa: F401 - the manifest API, also reachable here as it always was
    _RANGE_KEYS,
    _SPLIT_KEYS,
    _TOP_KEYS,
    _VARIANT_KEYS,
    MANIFEST_SCHEMA,
    SHOW,
    FileRange,
    Manifest,
    ManifestSplit,
    Variant,
    _bundled,
    _check_base,
    _check_pattern,
    _env_name,
    _is_manifest_path,
    _load_file,
    _load_path,
    _parse_files,
    _parse_split,
    _short,
    _text,
    list_manifests,
    load_manifest,
    manifest_dir,
    parse_manifest,
)
from .params import stable_hash
from .progress import Progress
from .samples import sample_dir, sample_paths

SOURCE_KINDS = ("named", "folder", "list", "sample")


@dataclass(frozen=True)
class SourceImage:
    key: str  #: path relative to the source root, forward slashes: the stable id of seeds, shard keys and holdout
    path: Path | str  #: absolute path to read, or (a URL source) the object's fsspec URL as a str


@dataclass(frozen=True)
class Source:
    kind: str  #: "named", "folder", "list" or "sample"
    name: str  #: the manifest's name ("LSDIR"), "sample", or the folder / list path as given
    split: str | None  #: the manifest split of a named source, else None
    root: Path | None  #: the folder keys are relative to (None for a URL source: `name` is that URL)
    images: tuple[SourceImage, ...]  #: sorted by key (plain str sort), keys unique
    variant: str | None = None  #: which of the manifest's layouts was found (named sources)

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> str:
        """One line, e.g. "LSDIR split train at /data/LSDIR: 84,991 images"."""
        n = f"{len(self.images):,} image{'s' if len(self.images) != 1 else ''}"
        if self.kind == "named":
            return f"{self.name} split {self.split} at {self.root} ({self.variant}): {n}"
        if self.kind == "sample":
            return f"the bundled sample photos: {n}"
        if self.kind == "list":
            missing = sum(not img.path.is_file() for img in self.images)
            return f"list file {self.name}: {n}" + (f" ({missing:,} not found)" if missing else "")
        return f"folder {self.name}: {n}"


# ---------------------------------------------------------------------------------------------------------------
# Walking folders


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return [e for e in it if not e.name.startswith(".")]
    except OSError as e:
        warnings.warn(f"{folder}: cannot list the folder ({e.strerror or e}); skipped", stacklevel=2)
        return []


def _kind(entry: os.DirEntry) -> str | None:
    """ "dir", "file", "bad" (a link loop or an entry that cannot be examined) or None (broken link, other)."""
    try:
        if entry.is_dir():
            return "dir"
        return "file" if entry.is_file() else None
    except OSError:
        return "bad"


def _dir_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _glob(root: Path, pattern: str) -> set[str]:
    """Keys (relative to root) of the files matching `pattern`: fnmatch per component, case-sensitive,
    "**" for any number of folders; hidden entries skipped; links followed with a loop guard."""
    parts = pattern.split("/")
    if parts[-1] == "**":
        parts.append("*")
    found: set[str] = set()

    def visit(folder: str, prefix: str, i: int, ancestors: frozenset, entries: list | None = None) -> None:
        part, last = parts[i], i == len(parts) - 1
        entries = _entries(folder) if entries is None else entries
        if part == "**":
            visit(folder, prefix, i + 1, ancestors, entries)  # "**" standing for no folder at all
            todo = [(e, i) for e in entries]
        elif last:
            # is_file follows links; a broken link is neither a file nor a folder. An entry that cannot be
            # examined (a link to itself) is kept: the builder logs it as unreadable, the walk goes on.
            found.update(prefix + e.name for e in entries if fnmatchcase(e.name, part) and _kind(e) in ("file", "bad"))
            return
        else:
            todo = [(e, i + 1) for e in entries if fnmatchcase(e.name, part)]
        for entry, nxt in todo:
            if _kind(entry) == "dir":
                ident = _dir_id(entry.path)
                if ident is not None and ident not in ancestors:
                    visit(entry.path, f"{prefix}{entry.name}/", nxt, ancestors | {ident})

    start = _dir_id(str(root))
    if start is not None:
        visit(str(root), "", 0, frozenset({start}))
    return found


def scan_images(root: Path, patterns: Sequence[str] = ("**/*",)) -> list[str]:
    """Sorted keys of the image files below `root` matching any of `patterns` (folder sources: all)."""
    keys: set[str] = set()
    for pattern in patterns:
        keys |= {k for k in _glob(root, pattern) if _is_image(k)}
    return sorted(keys)


def _images(root: Path, keys: Iterable[str]) -> tuple[SourceImage, ...]:
    return tuple(SourceImage(k, root / k) for k in sorted(keys))


# ---------------------------------------------------------------------------------------------------------------
# Opening sources


def _looks_like_path(src: str) -> bool:
    return "/" in src or "\\" in src or src.startswith((".", "~")) or os.sep in src


def _resolve_root(manifest: Manifest, root: str | Path | None, src: str | None = None) -> Path:
    where = "--root"
    if root is None or str(root) == "":
        env = os.environ.get(manifest.root_env, "").strip()
        if not env:
            hint = ""
            if src is not None and Path(src).is_dir():
                hint = f" (to use the folder ./{src} itself, pass --src ./{src})"
            how = f"Get it from {manifest.homepage}" + (f": {manifest.obtain}" if manifest.obtain else "")
            raise SourceError(
                f"{manifest.name} needs --root DIR (or the {manifest.root_env} environment variable): the folder "
                f"where you unpacked it{hint}. {how}."
            )
        root, where = env, manifest.root_env
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise SourceError(f"{manifest.name} root {path} (from {where}) {what}")
    return Path(os.path.abspath(path))


def _find_variant(split: ManifestSplit, root: Path) -> tuple[Variant | None, Path, list[str]]:
    """The first variant whose base holds a matching image: (variant, base folder, sorted keys)."""
    for v in split.variants:
        base = root if v.base == "." else root / v.base
        if base.is_dir():
            keys = scan_images(base, v.patterns)
            if keys:
                return v, base, keys
    return None, root, []


@dataclass(frozen=True)
class SplitReport:
    """How one split of a copy compares with its manifest."""

    split: str
    variant: str | None  #: the layout found; None when no image was found
    root: Path  #: the folder keys are relative to
    expected: int | None  #: None: the manifest does not know
    found: int
    missing: tuple[str, ...]  #: expected keys not found (only when the manifest lists its files)
    extra: tuple[str, ...]  #: found keys the manifest does not list
    listed: bool  #: whether the manifest lists the file names (so missing / extra are known)
    unreadable: tuple[tuple[str, str], ...] = ()  #: (key, reason), decode=True only
    decoded: int = 0  #: files decoded

    @property
    def ok(self) -> bool:
        count_ok = self.expected is None or self.found == self.expected
        return self.found > 0 and count_ok and not self.missing and not self.extra and not self.unreadable


def _compare(split: ManifestSplit, root: Path) -> tuple[SplitReport, list[str]]:
    variant, base, keys = _find_variant(split, root)
    expected_keys = variant.expected_keys() if variant else None
    if variant is None:
        # Nothing found: the first variant that lists its files says what is missing.
        listing = next((v for v in split.variants if v.files is not None), None)
        expected_keys = listing.expected_keys() if listing else None
    missing: list[str] = []
    extra: list[str] = []
    if expected_keys is not None:
        want, have = set(expected_keys), set(keys)
        missing, extra = sorted(want - have), sorted(have - want)
    report = SplitReport(
        split=split.name,
        variant=variant.name if variant else None,
        root=base,
        expected=split.count,
        found=len(keys),
        missing=tuple(missing),
        extra=tuple(extra),
        listed=expected_keys is not None,
    )
    return report, keys


def _mismatch_message(manifest: Manifest, report: SplitReport, user_root: Path) -> str:
    head = f"{manifest.name} split {report.split} at {user_root}"
    full = f"run `sr-degrade manifest --src {manifest.name} --root {user_root}` for the full report"
    if report.found == 0:
        layout = manifest.split(report.split).layout.rstrip(". ")
        return f"{head}: no images found; expected layout: {layout}; {full}"
    expected = "an unknown number of" if report.expected is None else f"{report.expected:,}"
    text = f"{head} ({report.variant}) does not match its manifest: expected {expected} images, found {report.found:,}"
    if report.missing:
        text += f"; missing {len(report.missing):,}: {_short(report.missing)}"
    if report.extra:
        text += f"; not in the manifest {len(report.extra):,}: {_short(report.extra)}"
    return f"{text}. To use it anyway, pass it as a folder (--src {report.root}); {full}"


def _open_named(manifest: Manifest, root: str | Path | None, split: str, check: bool, src: str | None = None) -> Source:
    msplit = manifest.split(split)
    user_root = _resolve_root(manifest, root, src)
    report, keys = _compare(msplit, user_root)
    if report.found == 0 or (check and not report.ok):
        raise SourceError(_mismatch_message(manifest, report, user_root))
    return Source("named", manifest.name, msplit.name, report.root, _images(report.root, keys), report.variant)


def _open_folder(src: str, folder: Path) -> Source:
    root = Path(os.path.abspath(folder))
    keys = scan_images(root)
    if not keys:
        raise SourceError(
            f"folder {src} holds no images (looked recursively for {', '.join(IMAGE_EXTENSIONS)}, any case, "
            "skipping hidden files and folders)"
        )
    return Source("folder", src, None, root, _images(root, keys))


def _open_list(src: str, list_file: Path) -> Source:
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise SourceError(f"list file {src} is not UTF-8 text (one image path per line)") from None
    except OSError as e:
        raise SourceError(f"list file {src}: cannot read it ({e.strerror or e})") from None
    base = Path(os.path.abspath(list_file.parent))
    relative: list[tuple[int, str]] = []
    absolute: list[tuple[int, str]] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = os.path.expanduser(line.replace("\\", "/"))
        (absolute if line.startswith("/") else relative).append((number, posixpath.normpath(line)))
    entries = [(n, key, Path(os.path.abspath(base / key))) for n, key in relative]
    if absolute:
        # Keys of absolute paths: relative to the deepest folder that holds them all.
        common = posixpath.commonpath([posixpath.dirname(p) for _, p in absolute])
        entries += [(n, posixpath.relpath(p, common), Path(p)) for n, p in absolute]
    if not entries:
        raise SourceError(f"list file {src} names no images (one path per line; # starts a comment)")
    lines_of: dict[str, list[int]] = {}
    for n, key, _ in entries:
        lines_of.setdefault(key, []).append(n)
    dups = [f"{k} (lines {', '.join(map(str, ns))})" for k, ns in lines_of.items() if len(ns) > 1]
    if dups:
        raise SourceError(f"list file {src} names the same image more than once: {_short(dups)}")
    images = tuple(SourceImage(key, path) for _, key, path in sorted(entries, key=lambda e: e[1]))
    return Source("list", src, None, base, images)


def _open_url_folder(src: str) -> Source:
    """An fsspec URL folder: its image objects, recursively, keyed by the path relative to it."""
    from . import storage

    base = src.rstrip("/")
    keys = []
    for url in storage.find(base):
        key = url[len(base) + 1 :]
        if key and not any(part.startswith(".") for part in key.split("/")) and _is_image(key):
            keys.append(key)
    if not keys:
        raise SourceError(
            f"{storage.shown(src)} holds no images (looked recursively for {', '.join(IMAGE_EXTENSIONS)}, any "
            "case, skipping hidden files and folders): check the URL"
        )
    return Source("folder", src, None, None, tuple(SourceImage(k, f"{base}/{k}") for k in sorted(keys)))


def _open_sample() -> Source:
    images = _images(sample_dir(), (p.name for p in sample_paths()))
    return Source("sample", "sample", None, sample_dir(), images)


def open_source(src: str, *, root: str | Path | None = None, split: str = "train", check: bool = True) -> Source:
    """What `--src` names, as a sorted `Source` (see the module doc for what `src` may be).

    `root` and `split` are for named sources (manifests); `check` compares a named source with its
    manifest's expectation (count, and file names where the manifest lists them) without decoding; a
    named source where no image is found at all is refused either way.
    """
    src = str(src)
    if not src.strip():
        raise SourceError("--src is empty: give a named source, a folder, a list file or 'sample'")
    if "://" in src or "::" in src:
        from .storage import is_url

        if is_url(src):
            if root is not None:
                raise SourceError(f"--root is only for named sources; not for the URL {src}")
            return _open_url_folder(src)
    path = Path(src).expanduser()
    pathlike = _looks_like_path(src)
    if _is_manifest_path(src) and path.is_file():
        return _open_named(load_manifest(path), root, split, check)
    if not pathlike and src.lower() == "sample":
        if root is not None:
            raise SourceError("--root is only for named sources; --src sample reads the bundled photos")
        return _open_sample()
    named = {} if pathlike else _bundled()
    if src.lower() in named:
        return _open_named(named[src.lower()], root, split, check, src)
    if root is not None:
        raise SourceError(f"--root is only for named sources ({', '.join(list_manifests())}); not for {src}")
    if path.is_dir():
        return _open_folder(src, path)
    if path.is_file():
        return _open_list(src, path)
    raise SourceError(
        f"no folder, list file or named source called {src!r}; named sources: "
        f"{', '.join(list_manifests())}, or 'sample' for the bundled photos"
    )


# ---------------------------------------------------------------------------------------------------------------
# Holdout


def holdout_score(key: str) -> float:
    """A number in [0, 1) fixed by the key alone, the same on every machine.

    Salted, so the images held out are not those whose sample seeds (`sample_rng`, which hashes the bare
    key) happen to be small.
    """
    return stable_hash("holdout:" + key) / float(1 << 63)


def split_holdout(images: Iterable[SourceImage], fraction: float) -> tuple[list[SourceImage], list[SourceImage]]:
    """(kept, held_out): an image is held out when its `holdout_score` < fraction. Order is preserved.

    Adding or removing an image moves no other image between the two sides.
    """
    if not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:  # NaN fails the comparison
        raise SourceError(f"holdout fraction must be in [0, 1), got {fraction!r}")
    kept: list[SourceImage] = []
    held: list[SourceImage] = []
    for img in images:
        (held if holdout_score(img.key) < fraction else kept).append(img)
    return kept, held


# ---------------------------------------------------------------------------------------------------------------
# Checking and writing manifests


def _decode_reason(path: str) -> str | None:
    """None when `path` decodes, else why not (the message names the file)."""
    try:
        read_image(path)
    except ImageError as e:
        return str(e)
    except Exception as e:  # a decoder crash on one file must not end a check of 85,000
        return f"{path}: {type(e).__name__}: {e}"
    return None


def decode_all(
    paths: Sequence[Path], workers: int = 1, progress: bool = True, label: str = "decode"
) -> list[str | None]:
    """Decode every file; the reason each one is unreadable (None when fine), in the order given.

    workers > 1 uses that many "spawn" processes (no fork of a parent holding threads or big arrays).
    """
    if not isinstance(workers, int) or workers < 1:
        raise SourceError(f"workers must be a whole number >= 1, got {workers!r}")
    names = [str(p) for p in paths]
    results: list[str | None] = []
    with Progress(len(names), label, unit="img", enabled=progress) as bar:
        if workers == 1 or len(names) < 2:
            for name in names:
                results.append(_decode_reason(name))
                bar.update(1)
        else:
            chunk = max(1, min(64, len(names) // (workers * 8)))
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(names))) as pool:
                for reason in pool.imap(_decode_reason, names, chunksize=chunk):
                    results.append(reason)
                    bar.update(1)
    return results


def _unreadable(keys: Sequence[str], reasons: Sequence[str | None]) -> tuple[tuple[str, str], ...]:
    return tuple((k, r) for k, r in zip(keys, reasons) if r is not None)


@dataclass(frozen=True)
class ManifestReport:
    """How a copy of a named source compares with its manifest, split by split."""

    name: str
    root: Path  #: the root the user gave
    splits: tuple[SplitReport, ...]

    @property
    def expected(self) -> int | None:
        """Images expected over the checked splits; None when a split's count is unknown."""
        counts = [s.expected for s in self.splits]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    @property
    def found(self) -> int:
        return sum(s.found for s in self.splits)

    @property
    def missing(self) -> list[str]:
        return [k for s in self.splits for k in s.missing]

    @property
    def extra(self) -> list[str]:
        return [k for s in self.splits for k in s.extra]

    @property
    def unreadable(self) -> list[tuple[str, str]]:
        return [u for s in self.splits for u in s.unreadable]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.splits)

    def summary(self, limit: int = 10) -> str:
        """Human text: one block per split, lists cut after `limit` entries with "... and N more"."""

        def listing(items: Sequence[str]) -> list[str]:
            out = [f"      {k}" for k in items[:limit]]
            return out + ([f"      ... and {len(items) - limit:,} more"] if len(items) > limit else [])

        lines = [f"{self.name} at {self.root}: " + ("OK" if self.ok else "does NOT match its manifest")]
        for s in self.splits:
            exp = "unknown" if s.expected is None else f"{s.expected:,}"
            where = f"{s.variant}, {s.root}" if s.variant else "no layout of the manifest found"
            lines.append(f"  split {s.split} ({where}): expected {exp} images, found {s.found:,}")
            if s.missing:
                lines += [f"    missing {len(s.missing):,}:"] + listing(s.missing)
            if s.extra:
                lines += [f"    not in the manifest {len(s.extra):,}:"] + listing(s.extra)
            if not s.listed and s.expected is not None and s.found != s.expected:
                lines.append("    (the manifest lists no file names for this layout, so they cannot be named)")
            if s.decoded:
                lines.append(f"    decoded {s.decoded:,}: {len(s.unreadable):,} unreadable")
                lines += listing([f"{k}: {r}" for k, r in s.unreadable])
        return "\n".join(lines)


def check_manifest(
    name: str,
    root: str | Path | None,
    split: str | None = None,
    decode: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> ManifestReport:
    """Compare a copy of a named source (name or manifest path) with its manifest: counts and file names,
    for one split or (split=None) every split; with decode=True also read every file found."""
    manifest = load_manifest(name)
    user_root = _resolve_root(manifest, root)
    splits = [manifest.split(split)] if split is not None else list(manifest.splits)
    reports = []
    for msplit in splits:
        report, keys = _compare(msplit, user_root)
        if decode and keys:
            label = f"decode {manifest.name} {msplit.name}"
            reasons = decode_all([report.root / k for k in keys], workers, progress, label)
            unreadable = _unreadable(keys, reasons)
            report = replace(report, unreadable=unreadable, decoded=len(keys))
        reports.append(report)
    return ManifestReport(manifest.name, user_root, tuple(reports))


class _Dumper(yaml.SafeDumper):
    """Block style lists, indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def write_manifest(
    folder: str | Path,
    out: str | Path,
    name: str,
    decode: bool = False,
    *,
    split: str = "train",
    workers: int = 1,
    progress: bool = True,
) -> Manifest:
    """Scan `folder` like a folder source and write a manifest for a new named source to `out`.

    The manifest lists every file (sorted) and their count as split `split`, so `--src out.yaml --root
    folder` later finds exactly this set or says what changed. With decode=True every file is decoded
    first; unreadable ones stay listed (the builder reports them) and are recorded under `unreadable`.
    """
    src = Path(folder).expanduser()
    if not src.is_dir():
        raise SourceError(f"{folder}: not a folder")
    if not name or any(c in name for c in "/\\") or name != name.strip() or _is_manifest_path(name):
        raise SourceError(f"manifest name must be a word without slashes, got {name!r}")
    root = Path(os.path.abspath(src))
    keys = scan_images(root)
    if not keys:
        raise SourceError(f"folder {folder} holds no images to list")
    unreadable: tuple[tuple[str, str], ...] = ()
    if decode:
        reasons = decode_all([root / k for k in keys], workers, progress, f"decode {name}")
        # The reason names the absolute path on this machine; the manifest keeps the key instead.
        unreadable = tuple((k, r.replace(str(root / k), k)) for k, r in _unreadable(keys, reasons))
    env = _env_name(name)
    split_data: dict[str, Any] = {
        "count": len(keys),
        "layout": f"the {len(keys):,} images found below the root by sr-degrade (recursively, hidden entries skipped)",
        "patterns": ["**/*"],
        "files": keys,
    }
    if unreadable:
        split_data["unreadable"] = [{"key": k, "reason": r} for k, r in unreadable]
    data = {
        "schema": MANIFEST_SCHEMA,
        "name": name,
        "description": f"Local images of {root}, pinned by sr-degrade manifest --write.",
        "homepage": str(root),
        "obtain": f"a copy of the folder {root}",
        "licence": "as for the images of that folder",
        "root_env": env,
        "splits": {split: split_data},
        "notes": [f"Use it with: sr-degrade build --src {Path(out).name} --root {root} --split {split}"],
    }
    text = f"# sr-degrade manifest for {name}: {len(keys):,} images. Schema: data_manifests/README.md.\n"
    text += yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    manifest = parse_manifest(yaml.safe_load(text), Path(os.path.abspath(out)))  # what a later load will see
    out_path = Path(out).expanduser()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_path)  # never leave a half-written manifest
    return manifest


__all__ = [
    "SOURCE_KINDS",
    "FileRange",
    "Manifest",
    "ManifestReport",
    "ManifestSplit",
    "Source",
    "SourceImage",
    "SplitReport",
    "Variant",
    "check_manifest",
    "decode_all",
    "holdout_score",
    "list_manifests",
    "load_manifest",
    "manifest_dir",
    "open_source",
    "parse_manifest",
    "scan_images",
    "split_holdout",
    "write_manifest",
]
