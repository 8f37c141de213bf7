"""The shard builder: HR photos -> degraded pairs, prompts and embeddings in webdataset shards.

    build(BuildOptions(src="sample", out=Path("shards/train"), text_encoder="minilm"))

How a build stays reproducible, resumable and parallel:

- Images are listed in a fixed order (sorted keys). Sample c of image `key` draws its crop position
  and its degradation from `sample_rng(seed, key, c)`, so its bytes depend on nothing else: not the
  worker count, not the order of completion, not which part of a split build it falls in.
- Workers (separate processes) read, crop, degrade and PNG-encode whole images; the main process
  takes their results back in image order through a bounded window (memory never holds more than
  a few images per worker), encodes each new prompt once with the text encoder (alone, so its bytes
  never depend on batching) and writes samples in order. Shard k holds samples k*S .. k*S+S-1.
- A shard is written as `NAME.tar.tmp`, flushed to disk and renamed to `NAME.tar` when complete;
  tar members carry fixed times, owner and mode. `--resume` reads the complete shards back, drops any
  `.tmp`, and continues with the sample after the last one stored: the result is byte-identical to
  an uninterrupted build.
- `--part i/N` builds the i-th contiguous slice of the image list into files prefixed
  `part{i}of{N}-`; its samples are exactly those (same keys, same bytes) of the unsplit build.
  `merge_parts` joins the parts' indexes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import platform
import sys
import tarfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import DegradationConfig
from .errors import BuildError, ImageError, printable
from .imageio import MAX_PIXELS, encode_png, read_image
from .locks import exclusive
from .params import degrade, sample_params, sample_rng
from .progress import Progress, plural
from .shards import (
    SCHEMA_VERSION,
    TAR_MODE,
    TAR_MTIME,
    TAR_USER,
    encode_json,
    encode_npy,
    key_stem,
    text_key,
)
from .text import PROMPT_FORMATS, bins, describe

DEFAULT_CROP = 512
SAMPLE_CROP = 256  # the bundled photos are small (300 to 1411 pixels a side)
_FULL_DISK = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@dataclass(frozen=True)
class BuildOptions:
    """Everything a build depends on. Fields marked (content) change the bytes of the shards."""

    src: str  #: named source, "sample", a folder or a list file
    out: Path  #: output folder (one split per folder)
    root: str | None = None  #: root folder of a named source
    split: str | None = None  #: (content) the named source's split and the shards' name; None: see _default_split
    crop_size: int | None = None  #: (content) HR crop side; None = 512 (256 for "sample"); 0 = whole image
    crops_per_image: int = 1  #: (content)
    val: bool = False  #: (content) evaluation mode: whole images, one fixed degradation each
    shard_size: int = 1000  #: (content) samples per shard
    seed: int = 0  #: (content)
    workers: int = 0  #: worker processes; 0 = all cores
    text_encoder: str | None = None  #: (content) name or path; None = the default (CLIP ViT-L/14)
    embed: bool = True  #: (content) False: no emb.npy members
    prompt_format: str = "original"  #: (content) original / shuffled / simplified / empty
    holdout: float = 0.0  #: (content) fraction of source images held out (by stable hash)
    take: str = "rest"  #: (content) "rest" builds the images not held out, "holdout" the held-out ones
    part: tuple[int, int] = (0, 1)  #: (content) build slice i of N
    resume: bool = False
    overwrite: bool = False
    check_manifest: bool = True  #: compare a named source with its manifest before building
    #: decode limit: larger sources are logged as unreadable, from their header, before decoding
    max_pixels: int = MAX_PIXELS
    config: DegradationConfig = field(default_factory=DegradationConfig)  #: (content)

    def resolved_crop(self) -> int:
        if self.val:
            return 0
        if self.crop_size is None:
            return SAMPLE_CROP if self.src == "sample" else DEFAULT_CROP
        return self.crop_size


@dataclass
class BuildSummary:
    images: int = 0
    samples: int = 0
    shards: int = 0
    bytes: int = 0
    errors: int = 0
    seconds: float = 0.0  #: wall time of the whole build, start-up included
    steady_seconds: float = 0.0  #: from the first image's result to the end (no start-up)
    steady_samples: int = 0  #: samples written in steady_seconds
    resumed_from: int = 0  #: complete shards found and kept by --resume

    @property
    def rate(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        return (
            f"{plural(self.images, 'image')} -> {plural(self.samples, 'sample')} in {plural(self.shards, 'shard')} "
            f"({self.bytes / 1e6:.1f} MB), {plural(self.errors, 'error')}, {self.seconds:.1f} s, "
            f"{self.rate:.1f} samples/s"
        )


@dataclass
class _Names:
    """File names of one build (or one part of a split build) inside the output folder."""

    out: Path
    prefix: str  # "" or "part0of2-"
    split: str

    def shard(self, k: int) -> Path:
        return self.out / f"{self.prefix}{self.split}-{k:06d}.tar"

    @property
    def index(self) -> Path:
        return self.out / f"{self.prefix}index.parquet"

    @property
    def build_json(self) -> Path:
        return self.out / f"{self.prefix}build.json"

    @property
    def errors(self) -> Path:
        return self.out / f"{self.prefix}errors.jsonl"

    @property
    def lock(self) -> Path:
        """Held while a process builds these files (hidden, never one of the build's own files)."""
        return self.out / f".{self.prefix}{self.split}.lock"

    def own_files(self) -> list[Path]:
        mine = [self.index, self.build_json, self.errors]
        shards = self.out.glob(f"{self.prefix}{self.split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar*")
        return [p for p in mine if p.exists()] + sorted(shards)


# ---- worker side ---------------------------------------------------------------------------------

_JOB: dict[str, Any] = {}


def _init_worker(job: dict[str, Any]) -> None:
    import cv2

    cv2.setNumThreads(1)  # one image per process; OpenCV threads would oversubscribe the cores
    _JOB.clear()
    _JOB.update(job, config=DegradationConfig.from_dict(job["config"]))


def _process_image(position: int, key: str, path: str, first_crop: int) -> dict[str, Any]:
    """Read one image and make its samples (from crop index `first_crop` on); never raises."""
    cfg: DegradationConfig = _JOB["config"]
    crop, n_crops, seed, fmt = _JOB["crop"], _JOB["crops"], _JOB["seed"], _JOB["format"]
    scale = cfg.scale
    try:
        full = read_image(path, _JOB["max_pixels"])
    except ImageError as e:
        return {"position": position, "key": key, "error": str(e)}
    h, w = full.shape[:2]
    if crop == 0:
        ch, cw = h // scale * scale, w // scale * scale
        if ch == 0 or cw == 0:
            return {"position": position, "key": key, "error": f"{path}: {w}x{h} is smaller than the scale {scale}"}
    else:
        ch = cw = crop
        if h < crop or w < crop:
            reason = f"{path}: {w}x{h} is smaller than the crop {crop}; use a smaller --crop-size or 0 (whole image)"
            return {"position": position, "key": key, "error": reason}
    samples = []
    for c in range(first_crop, n_crops):
        rng = sample_rng(seed, key, c)
        y = int(rng.integers(0, h - ch + 1)) if crop else 0
        x = int(rng.integers(0, w - cw + 1)) if crop else 0
        hr = np.ascontiguousarray(full[y : y + ch, x : x + cw])
        params = sample_params(cfg, rng)
        lr = degrade(hr, params)
        prompt = describe(params, fmt, rng=rng, cfg=cfg)
        samples.append(
            {
                "crop_index": c,
                "box": [x, y, cw, ch],
                "hr_png": encode_png(hr),
                "lr_png": encode_png(lr),
                "lr_size": [lr.shape[1], lr.shape[0]],
                "params": params.to_dict(),
                "bins": bins(params, cfg),
                "prompt": prompt,
            }
        )
    return {"position": position, "key": key, "image_size": [w, h], "samples": samples}


# ---- main side -----------------------------------------------------------------------------------


def _tally(samples: int, shards: int, errors: int) -> str:
    return f"{plural(samples, 'sample')}, {plural(shards, 'shard')} complete, {plural(errors, 'error')}"


def _ordered_results(
    tasks: list[tuple[int, str, str, int]], workers: int, job: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Results of _process_image in task order, `workers` processes, a bounded window in flight."""
    if workers <= 1:
        _init_worker(job)
        for task in tasks:
            yield _process_image(*task)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork after torch/OpenMP are loaded here
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        window: deque = deque()
        it = iter(tasks)
        for task in it:
            window.append(pool.apply_async(_process_image, task))
            if len(window) >= 4 * workers:
                break
        while window:
            result = window.popleft().get()
            nxt = next(it, None)
            if nxt is not None:
                window.append(pool.apply_async(_process_image, nxt))
            yield result


def _versions() -> dict[str, str]:
    import cv2
    import pyarrow
    import webdataset

    out = {
        "python": platform.python_version(),
        "sr_degrade": __version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "webdataset": getattr(webdataset, "__version__", "?"),
        "pyarrow": pyarrow.__version__,
    }
    for name in ("torch", "transformers"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = mod.__version__
    return out


def _fingerprint(opts: BuildOptions, source_id: str, keys: list[str], encoder_id: str | None) -> dict[str, Any]:
    """What the shard bytes depend on; a resumed build must match it exactly."""
    from .params import stable_hash

    return {
        "schema": SCHEMA_VERSION,
        "sr_degrade": __version__,
        "source": source_id,
        "images": len(keys),
        "image_keys_hash": stable_hash("\n".join(keys)),
        "split": opts.split,
        "crop_size": opts.resolved_crop(),
        "crops_per_image": 1 if opts.val else opts.crops_per_image,
        "val": opts.val,
        "shard_size": opts.shard_size,
        "seed": opts.seed,
        "embed": opts.embed,
        "text_encoder": encoder_id,
        "prompt_format": opts.prompt_format,
        "holdout": opts.holdout,
        "take": opts.take,
        "part": list(opts.part),
        "config": opts.config.to_dict(),
    }


def _default_split(src: str, val: bool = False) -> str:
    """The split a build is named after when --split is not given: a named source's only split
    (DIV2K-val: val), or "val" for --val builds when the source has one (or is not a named source),
    else "train"."""
    from .errors import SourceError
    from .sources import load_manifest

    try:
        names = load_manifest(src).split_names
    except (SourceError, OSError):
        return "val" if val else "train"
    if len(names) == 1 or "train" not in names:
        return names[0]
    return "val" if val and "val" in names else "train"


def _source_id(source) -> str:
    """Where the images come from, without machine-specific paths (shard bytes must not depend on
    where a dataset is mounted): "LSDIR:train", "sample", or a folder / list file's name."""
    if source.kind in ("named", "sample"):
        return f"{source.name}:{source.split}" if source.split else source.name
    return Path(str(source.name)).name


def _validate(opts: BuildOptions) -> None:
    scale = opts.config.scale
    crop = opts.resolved_crop()
    if crop < 0 or crop % scale:
        raise BuildError(f"--crop-size {crop} must be 0 (whole image) or a positive multiple of the scale {scale}")
    if opts.crops_per_image < 1:
        raise BuildError(f"--crops-per-image must be >= 1, got {opts.crops_per_image}")
    if opts.shard_size < 1:
        raise BuildError(f"--shard-size must be >= 1, got {opts.shard_size}")
    i, n = opts.part
    if not (n >= 1 and 0 <= i < n):
        raise BuildError(f"--part {i}/{n}: needs 0 <= i < N (e.g. 0/4 ... 3/4)")
    if opts.prompt_format not in PROMPT_FORMATS:
        raise BuildError(f"--format {opts.prompt_format!r}: choose one of {', '.join(PROMPT_FORMATS)}")
    if not 0.0 <= opts.holdout < 1.0:
        raise BuildError(f"--holdout {opts.holdout}: needs a fraction in [0, 1)")
    if opts.take not in ("rest", "holdout"):
        raise BuildError(f"--take {opts.take!r}: use 'rest' or 'holdout'")
    if opts.take == "holdout" and opts.holdout == 0.0:
        raise BuildError("--take holdout needs --holdout FRACTION > 0")
    if opts.max_pixels < 1:
        raise BuildError(f"--max-pixels must be >= 1, got {opts.max_pixels}")


def _unique_keys(keys: list[str]) -> dict[str, str]:
    """Shard key stem of each image key.

    A stem shared by several keys after sanitising (`a.b.png`, `a_b.png`) gets a short hash of the
    key appended, so it depends on the key alone (not on the other files); stems of names that
    collide with nothing are the plain sanitised name, as they always were. Two keys whose stems
    still coincide, or whose text forms do (an undecodable name and its escaped spelling), are
    refused, naming both files.
    """
    from collections import Counter

    from .params import stable_hash

    seen = Counter(key_stem(k) for k in keys)
    stems: dict[str, str] = {}
    owner: dict[str, str] = {}
    texts: dict[str, str] = {}
    for k in keys:
        base = key_stem(k)
        stem = f"{base}_{stable_hash(k) & 0xFFFFFF:06x}" if seen[base] > 1 else base
        for table, name in ((owner, stem), (texts, text_key(k))):
            if name in table:
                raise BuildError(
                    f"the source files {printable(table[name])!r} and {printable(k)!r} would get the same shard "
                    "key; rename one of them"
                )
            table[name] = k
        stems[k] = stem
    return stems


def _shard_rows(path: Path, members: set[str]) -> list[dict[str, Any]]:
    """Index rows rebuilt from the json members of one shard (for --resume); ValueError when a
    sample lacks one of `members` or holds others (a shard cut short, or not this build's)."""
    rows = []
    have: dict[str, set[str]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            have.setdefault(key, set()).add(ext)
            if ext == "json":
                meta = json.loads(tar.extractfile(member).read())
                rows.append(_row(key, path.name, meta))
    for key, exts in have.items():
        if exts != members:
            raise ValueError(f"sample {key} holds {sorted(exts)}, expected {sorted(members)}")
    return rows


def _row(key: str, shard: str, meta: dict[str, Any]) -> dict[str, Any]:
    levels = meta["bins"]
    x, y, w, h = meta["crop"]
    enc = meta.get("encoder") or {}
    return {
        "key": key,
        "shard": shard,
        "image": meta["image"],
        "crop_index": meta["seeds"]["crop_index"],
        "crop_x": x,
        "crop_y": y,
        "crop_w": w,
        "crop_h": h,
        "lr_w": meta["lr_size"][0],
        "lr_h": meta["lr_size"][1],
        "prompt": meta["prompt"],
        "prompt_format": meta["prompt_format"],
        "order": ",".join(meta["params"]["order"]),
        **{c: levels.get(c) for c in ("blur", "resize1", "noise", "jpeg", "resize2")},
        "params": json.dumps(meta["params"], sort_keys=True),
        "emb_len": enc.get("L"),
    }


def _write_index(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("key", pa.string()),
            ("shard", pa.string()),
            ("image", pa.string()),
            ("crop_index", pa.int32()),
            ("crop_x", pa.int32()),
            ("crop_y", pa.int32()),
            ("crop_w", pa.int32()),
            ("crop_h", pa.int32()),
            ("lr_w", pa.int32()),
            ("lr_h", pa.int32()),
            ("prompt", pa.string()),
            ("prompt_format", pa.string()),
            ("order", pa.string()),
            ("blur", pa.string()),
            ("resize1", pa.string()),
            ("noise", pa.string()),
            ("jpeg", pa.string()),
            ("resize2", pa.string()),
            ("params", pa.string()),
            ("emb_len", pa.int32()),
        ]
    )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class _DroppableFile:
    """A file whose writes can be switched off: after a failed write (a full disk), the tar
    stream's own clean-up must not write into, or complain about, the abandoned file."""

    def __init__(self, path: Path):
        self._file = open(path, "wb")  # closed in close()
        self.dropped = False

    def write(self, data: bytes) -> int:
        return len(data) if self.dropped else self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        if not self.dropped:
            self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def drop(self) -> None:
        self.dropped = True
        with contextlib.suppress(OSError):
            self._file.close()


class _ShardSink:
    """Writes samples into numbered shards: `.tar.tmp` while open, renamed when complete."""

    def __init__(self, names: _Names, shard_size: int, first: int):
        self.names, self.size, self.k = names, shard_size, first
        self.count = 0
        self.bytes = 0
        self.completed: list[Path] = []
        self._file = None
        self._tar = None

    def add(self, members: dict[str, bytes | str]) -> str:
        import webdataset as wds

        if self._tar is None:
            tmp = self.names.shard(self.k).with_suffix(".tar.tmp")
            self._file = _DroppableFile(tmp)
            self._tar = wds.TarWriter(
                self._file, user=TAR_USER, group=TAR_USER, mode=TAR_MODE, encoder=False, mtime=TAR_MTIME
            )
        self._tar.write(members)
        self.count += 1
        name = self.names.shard(self.k).name
        if self.count == self.size:
            self.finish()
        return name

    def finish(self) -> None:
        """Complete the open shard (if any): flush it to disk, then rename it into place."""
        if self._tar is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.names.shard(self.k)
        os.replace(final.with_suffix(".tar.tmp"), final)
        self.bytes += final.stat().st_size
        self.completed.append(final)
        self._tar = self._file = None
        self.k += 1
        self.count = 0

    def abort(self) -> None:
        """Drop the open, incomplete shard."""
        if self._file is not None:
            self._file.drop()
            self.names.shard(self.k).with_suffix(".tar.tmp").unlink(missing_ok=True)
        self._tar = self._file = None


def _check_output(names: _Names, opts: BuildOptions) -> None:
    """Refuse an output folder that holds this build's files unless --resume or --overwrite says what to do."""
    if opts.resume or opts.overwrite or not names.out.is_dir():
        return
    existing = names.own_files()
    if existing:
        raise BuildError(
            f"{names.out} already holds a build ({existing[0].name}, ...): pass --resume to continue it "
            "or --overwrite to replace it"
        )


def _prepare_output(
    names: _Names, fingerprint: dict[str, Any], opts: BuildOptions, log: Callable[[str], None]
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Check the output folder; returns (complete shards kept, their index rows, errors kept)."""
    names.out.mkdir(parents=True, exist_ok=True)
    existing = names.own_files()
    if not existing:
        return 0, [], []
    if opts.overwrite:
        for p in existing:
            p.unlink()
        return 0, [], []
    _check_output(names, opts)
    try:
        previous = json.loads(names.build_json.read_text())
    except (OSError, ValueError):
        raise BuildError(f"{names.build_json} is missing or unreadable: cannot resume; use --overwrite") from None
    old = previous.get("fingerprint", {})
    differ = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if differ:
        raise BuildError(
            f"{names.out} holds a build of another configuration (differs in: {', '.join(differ)}); "
            "rerun with the same arguments to --resume, or pass --overwrite to replace it"
        )
    for tmp in names.out.glob(f"{names.prefix}{names.split}-*.tar.tmp"):
        tmp.unlink()
    # A shard counts as complete only when it holds what was written into it: shard_size whole
    # samples, or (the last shard of a finished build) exactly the samples build.json counted. A
    # shard cut at a member boundary still reads as a valid tar, so the count is what tells.
    members = {"hr.png", "lr.png", "txt", "json"} | ({"emb.npy"} if opts.embed else set())
    counts = previous.get("counts") or {}
    finished = previous.get("status") == "complete"
    kept, rows = 0, []
    while names.shard(kept).exists():
        shard = names.shard(kept)
        try:
            found = _shard_rows(shard, members)
        except (tarfile.TarError, OSError, ValueError, KeyError, TypeError) as e:
            log(f"{shard.name} is damaged ({e}): rebuilding from it")
            break
        last_of_finished = finished and counts.get("shards") == kept + 1
        expected = counts.get("samples", -1) - len(rows) if last_of_finished else opts.shard_size
        if len(found) != expected or len(found) > opts.shard_size:
            log(f"{shard.name} is damaged ({len(found)} of {expected} samples): rebuilding from it")
            break
        rows += found
        kept += 1
    for later in sorted(names.out.glob(f"{names.prefix}{names.split}-*.tar")):
        if later not in {names.shard(k) for k in range(kept)}:
            later.unlink()
    errors = []
    if names.errors.exists():
        errors = [json.loads(line) for line in names.errors.read_text().splitlines() if line.strip()]
    return kept, rows, errors


def build(opts: BuildOptions, *, progress: bool = True, log: Callable[[str], None] | None = None) -> BuildSummary:
    """Run one build (or one part of it). Raises SrDegradeError subclasses for what a user can fix.

    Arguments and the output folder are checked before anything heavy loads (the text encoder), so
    a refusal is immediate. One process at a time builds a given (output folder, split, part): the
    others get a LockError naming the holder's PID. The lock is the operating system's, freed when
    its holder dies, so `--resume` after a kill -9 just works.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if opts.split is None:
        opts = replace(opts, split=_default_split(opts.src, opts.val))
    _validate(opts)
    i, n = opts.part
    names = _Names(Path(opts.out), f"part{i}of{n}-" if n > 1 else "", opts.split)
    created = [p for p in (names.out, *names.out.parents) if not p.exists()]  # folders the lock will make
    try:
        with exclusive(names.lock, f"the build of {names.prefix}{names.split} in {names.out}"):
            _check_output(names, opts)  # fast refusal, before the source is walked or the encoder loads
            return _build(opts, names, progress, log)
    except BaseException:
        if created:  # a build that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                names.lock.unlink()
                for folder in created:
                    folder.rmdir()  # only when empty
        raise


def _build(opts: BuildOptions, names: _Names, progress: bool, log: Callable[[str], None]) -> BuildSummary:
    from .sources import open_source, split_holdout

    started = time.perf_counter()
    source = open_source(opts.src, root=opts.root, split=opts.split, check=opts.check_manifest)
    images = list(source.images)
    if opts.holdout:
        kept_images, held = split_holdout(images, opts.holdout)
        images = held if opts.take == "holdout" else kept_images
    stems = _unique_keys([im.key for im in images])
    i, n = opts.part
    images = images[i * len(images) // n : (i + 1) * len(images) // n]

    encoder = None
    encoder_id = None
    if opts.embed:
        from .embed import DEFAULT_ENCODER, load_text_encoder

        encoder = load_text_encoder(opts.text_encoder or DEFAULT_ENCODER)
        # One thread: the workers own the cores; a multi-threaded encoder in this process would
        # fight them (measured: 85-270 ms a prompt with 2 threads under load, 25 ms with 1).
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        encoder_id = encoder.info.to_dict()
    source_id = _source_id(source)
    fingerprint = _fingerprint(opts, source_id, [im.key for im in source.images], encoder_id)
    kept, rows, errors = _prepare_output(names, fingerprint, opts, log)

    # Where to continue: the sample after the last one stored in a complete shard.
    position_of = {text_key(im.key): p for p, im in enumerate(images)}
    start_pos, start_crop = 0, 0
    if rows:
        last = rows[-1]
        start_pos, start_crop = position_of[last["image"]], last["crop_index"] + 1
    errors = [e for e in errors if position_of.get(e["image"], -1) < start_pos]
    n_crops = 1 if opts.val else opts.crops_per_image
    if start_crop >= n_crops:
        start_pos, start_crop = start_pos + 1, 0

    build_info: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "status": "running",
        "fingerprint": fingerprint,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k != "config"},
        "config": opts.config.to_dict(),
        "source": source.describe(),
        "encoder": encoder_id,
        "versions": _versions(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(names.build_json, build_info)
    if kept:
        log(f"resuming after {kept} complete shards ({len(rows)} samples)")

    job = {
        "config": opts.config.to_dict(),
        "crop": opts.resolved_crop(),
        "crops": n_crops,
        "seed": opts.seed,
        "format": opts.prompt_format,
        "max_pixels": opts.max_pixels,
    }
    tasks = [
        (p, im.key, str(im.path), start_crop if p == start_pos else 0) for p, im in enumerate(images) if p >= start_pos
    ]
    workers = opts.workers or os.cpu_count() or 1
    summary = BuildSummary(images=len(images), resumed_from=kept)
    sink = _ShardSink(names, opts.shard_size, kept)
    embeddings: dict[str, bytes] = {}
    emb_lengths: dict[str, int] = {}
    status = "interrupted"
    with open(names.errors, "w") as err_log:
        for e in errors:
            err_log.write(json.dumps(e) + "\n")
        bar = Progress(len(tasks), f"build {names.prefix}{opts.split}", unit="img", enabled=progress)
        first_done, first_rows = None, 0
        try:
            for result in _ordered_results(tasks, workers, job):
                if first_done is None:
                    first_done, first_rows = time.perf_counter(), len(rows)
                if "error" in result:
                    path = str(images[result["position"]].path)
                    entry = {"image": text_key(result["key"]), "path": text_key(path)}
                    entry["reason"] = text_key(result["error"])
                    errors.append(entry)
                    err_log.write(json.dumps(entry) + "\n")
                    err_log.flush()
                for s in result.get("samples", []):
                    key = f"{stems[result['key']]}_c{s['crop_index']}"
                    meta = {
                        "schema": SCHEMA_VERSION,
                        "source": source_id,
                        "image": text_key(result["key"]),
                        "image_size": result["image_size"],
                        "crop": s["box"],
                        "lr_size": s["lr_size"],
                        "seeds": {"build": opts.seed, "crop_index": s["crop_index"]},
                        "params": s["params"],
                        "bins": s["bins"],
                        "prompt": s["prompt"],
                        "prompt_format": opts.prompt_format,
                        "scale": opts.config.scale,
                        "encoder": None,
                    }
                    members: dict[str, Any] = {
                        "__key__": key,
                        "hr.png": s["hr_png"],
                        "lr.png": s["lr_png"],
                        "txt": s["prompt"].encode("utf-8"),
                    }
                    if encoder is not None:
                        prompt = s["prompt"]
                        if prompt not in embeddings:
                            emb = encoder.encode(prompt)
                            embeddings[prompt], emb_lengths[prompt] = encode_npy(emb), emb.shape[0]
                        members["emb.npy"] = embeddings[prompt]
                        meta["encoder"] = {**encoder_id, "L": emb_lengths[prompt], "D": encoder.info.dim}
                    members["json"] = encode_json(meta)
                    shard = sink.add(members)
                    rows.append(_row(key, shard, meta))
                bar.update(1, extra=_tally(len(rows), sink.k, len(errors)))
            sink.finish()
            bar.extra = _tally(len(rows), sink.k, len(errors))
            status = "complete"
        except OSError as e:
            sink.abort()
            if e.errno in _FULL_DISK:
                status = "stopped: disk full"
                raise BuildError(
                    f"disk full while writing to {names.out} ({e.strerror}); the {sink.k} complete shards are kept: "
                    "free some space and rerun the same command with --resume"
                ) from None
            raise
        except BaseException:
            sink.abort()
            raise
        finally:
            bar.close()
            summary.shards = sink.k
            summary.samples = len(rows)
            summary.errors = len(errors)
            summary.bytes = sum(names.shard(k).stat().st_size for k in range(sink.k) if names.shard(k).exists())
            summary.seconds = time.perf_counter() - started
            if first_done is not None:
                summary.steady_seconds = time.perf_counter() - first_done
                summary.steady_samples = len(rows) - first_rows
            if encoder is not None:
                torch.set_num_threads(torch_threads)
            complete_rows = [r for r in rows if names.out.joinpath(r["shard"]).exists()]
            with contextlib.suppress(OSError):
                _write_index(names.index, complete_rows)
                build_info.update(
                    status=status,
                    finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    counts={**asdict(summary), "samples_per_s": round(summary.rate, 2)},
                    errors=len(errors),
                )
                _write_json(names.build_json, build_info)
    return summary


def merge_parts(out: str | Path, parts: list[str | Path] | None = None) -> dict[str, Any]:
    """Join the indexes of a split build's parts into `out`/index.parquet and `out`/build.json.

    `parts` are folders holding `part*-index.parquet` files (default: `out` itself). All parts must
    come from the same configuration and be complete; every part of the split must be present.
    """
    import pyarrow.parquet as pq

    out = Path(out)
    folders = [Path(p) for p in (parts or [out])]
    infos = []
    for folder in folders:
        for bj in sorted(folder.glob("part*of*-build.json")):
            infos.append((folder, bj, json.loads(bj.read_text())))
    if not infos:
        raise BuildError(f"no part builds (part*of*-build.json) found in {', '.join(map(str, folders))}")
    base = {k: v for k, v in infos[0][2]["fingerprint"].items() if k != "part"}
    total = infos[0][2]["fingerprint"]["part"][1]
    seen: dict[int, Path] = {}
    for _folder, bj, info in infos:
        fp = info["fingerprint"]
        other = {k: v for k, v in fp.items() if k != "part"}
        if other != base:
            differ = sorted(k for k in set(other) | set(base) if other.get(k) != base.get(k))
            raise BuildError(f"{bj} comes from another configuration (differs in: {', '.join(differ)})")
        if info["status"] != "complete":
            raise BuildError(f"{bj}: part is {info['status']}; finish it with --resume before merging")
        seen[fp["part"][0]] = bj
    missing = [i for i in range(total) if i not in seen]
    if missing:
        raise BuildError(f"parts {missing} of {total} are missing; build them with --part i/{total} first")
    import pyarrow as pa

    tables = []
    counts: dict[str, float] = {}
    for i in range(total):
        bj = seen[i]
        tables.append(pq.read_table(bj.with_name(bj.name.replace("build.json", "index.parquet"))))
        info = json.loads(bj.read_text())
        for k, v in info.get("counts", {}).items():
            if isinstance(v, (int, float)) and k not in ("samples_per_s", "seconds"):
                counts[k] = counts.get(k, 0) + v
    table = pa.concat_tables(tables)
    out.mkdir(parents=True, exist_ok=True)
    _write_index(out / "index.parquet", table.to_pylist())
    merged = {
        **json.loads(seen[0].read_text()),
        "status": "complete",
        "merged_parts": [str(seen[i]) for i in range(total)],
        "counts": counts,
    }
    merged["fingerprint"] = {**merged["fingerprint"], "part": [0, 1]}
    _write_json(out / "build.json", merged)
    return {"parts": total, "samples": table.num_rows}
