"""The shard builder: HR photos -> degraded pairs, prompts and embeddings in webdataset shards.

    build(BuildOptions(src="sample", out=Path("shards/train"), text_encoder="minilm"))

How a build stays reproducible, resumable and parallel:

- Images are listed in a fixed order (sorted keys). Sample c of image `key` draws its crop position
  and its degradation from `sample_rng(seed, key, c)` (`build_worker`), so its bytes depend on nothing
  else: not the worker count, not the engine, not the order of completion, not which part of a split
  build it falls in.
- The local engine: worker processes read, crop, degrade and PNG-encode whole images; the main process
  takes their results back in image order through a bounded window (memory never holds more than
  a few images per worker), encodes each new prompt once with the text encoder (alone, so its bytes
  never depend on batching) and writes samples in order. Shard k holds samples k*S .. k*S+S-1.
  The Ray engine (`ray_build`, `engine="ray"`) writes the same shards, one task per shard.
- A shard appears under its final name only when complete (`shard_writer`); tar members carry fixed
  times, owner and mode. `--resume` reads the complete shards back, drops any `.tmp`, and continues
  with the sample after the last one stored: the result is byte-identical to an uninterrupted build.
- The output folder may be an fsspec URL (s3://bucket/shards/train, ...), the source too (`storage`).
- `--part i/N` builds the i-th contiguous slice of the image list into files prefixed
  `part{i}of{N}-`; its samples are exactly those (same keys, same bytes) of the unsplit build.
  `merge_parts` joins the parts' indexes.

Modules: planning and the run here; `build_worker` (image -> samples -> members), `shard_writer`
(output folder, shards, index), `ray_build` (the Ray engine).
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

from . import __version__, storage
from .build_worker import Embeddings, SampleContext, init_worker, process_image, sample_members
from .config import DegradationConfig
from .errors import BuildError, SrDegradeError, printable
from .imageio import MAX_PIXELS
from .locks import exclusive
from .progress import Progress, plural
from .shard_writer import Output, ShardNames, ShardSink, index_bytes, index_row, json_bytes, shard_rows, write_index
from .shards import SCHEMA_VERSION, key_stem, text_key
from .text import PROMPT_FORMATS

DEFAULT_CROP = 512
SAMPLE_CROP = 256  # the bundled photos are small (300 to 1411 pixels a side)
_FULL_DISK = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@dataclass(frozen=True)
class BuildOptions:
    """Everything a build depends on. Fields marked (content) change the bytes of the shards."""

    src: str  #: named source, "sample", a folder, a list file or a folder URL (s3://bucket/photos/)
    out: str | Path  #: output folder (one split per folder), local or a URL (s3://bucket/shards/train)
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
    #: "local" (worker processes on this machine) or "ray" (one task per shard on a Ray cluster): same bytes
    engine: str = "local"
    #: with engine "ray": the cluster (host:port, ray://host:port or "auto"); None starts a local Ray of `workers` CPUs
    address: str | None = None

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


# ---- main side -----------------------------------------------------------------------------------


def _tally(samples: int, shards: int, errors: int) -> str:
    return f"{plural(samples, 'sample')}, {plural(shards, 'shard')} complete, {plural(errors, 'error')}"


def _ordered_results(
    tasks: list[tuple[int, str, str, int]], workers: int, job: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Results of build_worker.process_image in task order, `workers` processes, a bounded window in flight."""
    if workers <= 1:
        init_worker(job)
        for task in tasks:
            yield process_image(*task)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork after torch/OpenMP are loaded here
    with ctx.Pool(workers, initializer=init_worker, initargs=(job,)) as pool:
        window: deque = deque()
        it = iter(tasks)
        for task in it:
            window.append(pool.apply_async(process_image, task))
            if len(window) >= 4 * workers:
                break
        while window:
            result = window.popleft().get()
            nxt = next(it, None)
            if nxt is not None:
                window.append(pool.apply_async(process_image, nxt))
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
    if opts.engine not in ("local", "ray"):
        raise BuildError(f"--engine {opts.engine!r}: use 'local' (worker processes) or 'ray' (a Ray cluster)")
    if opts.address is not None and opts.engine != "ray":
        raise BuildError("--address names a Ray cluster: it needs --engine ray")


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


def _write_json(out: Output, name: str, data: dict[str, Any]) -> None:
    out.write_bytes(name, json_bytes(data))


def _write_index(path: str | Path, rows: list[dict[str, Any]]) -> None:
    write_index(path, rows)


def _check_output(names: ShardNames, opts: BuildOptions) -> None:
    """Refuse an output folder that holds this build's files unless --resume or --overwrite says what to do."""
    if opts.resume or opts.overwrite:
        return
    existing = names.own_files()
    if existing:
        raise BuildError(
            f"{names.out} already holds a build ({existing[0]}, ...): pass --resume to continue it "
            "or --overwrite to replace it"
        )


#: The members of every sample (emb.npy too when the build embeds).
def _members(opts: BuildOptions) -> set[str]:
    return {"hr.png", "lr.png", "txt", "json"} | ({"emb.npy"} if opts.embed else set())


def _previous_build(names: ShardNames, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """build.json of the build being resumed, refused when it is missing or of another configuration."""
    try:
        previous = json.loads(names.out.read_bytes(names.build_json))
    except (OSError, ValueError, SrDegradeError):
        raise BuildError(
            f"{names.out.path(names.build_json)} is missing or unreadable: cannot resume; use --overwrite"
        ) from None
    old = previous.get("fingerprint", {})
    differ = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if differ:
        raise BuildError(
            f"{names.out} holds a build of another configuration (differs in: {', '.join(differ)}); "
            "rerun with the same arguments to --resume, or pass --overwrite to replace it"
        )
    return previous


def _prepare_output(
    names: ShardNames, fingerprint: dict[str, Any], opts: BuildOptions, log: Callable[[str], None]
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Check the output folder; returns (complete shards kept, their index rows, errors kept).

    With --resume, shards 0, 1, ... are kept while each holds what was written into it: shard_size whole
    samples, or (the last shard of a finished build) exactly the samples build.json counted (a shard cut
    at a member boundary still reads as a valid tar, so the count is what tells); the rest are removed.
    The Ray engine keeps any complete shard its plan still wants (`ray_build`); it reads none here.
    """
    out = names.out
    out.mkdir()
    existing = names.own_files()
    if not existing:
        return 0, [], []
    if opts.overwrite:
        for name in existing:
            out.unlink(name)
        return 0, [], []
    _check_output(names, opts)
    previous = _previous_build(names, fingerprint)
    for tmp in out.names(names.shard_pattern + ".tmp"):
        out.unlink(tmp)
    errors = []
    if out.exists(names.errors):
        text = out.read_bytes(names.errors).decode()
        errors = [json.loads(line) for line in text.splitlines() if line.strip()]
    if opts.engine == "ray":
        return 0, [], errors
    counts = previous.get("counts") or {}
    finished = previous.get("status") == "complete"
    kept, rows = 0, []
    while out.exists(names.shard(kept)):
        shard = names.shard(kept)
        try:
            with out.open_read(shard) as f:
                found = shard_rows(f, shard, _members(opts))
        except (tarfile.TarError, OSError, ValueError, KeyError, TypeError, SrDegradeError) as e:
            log(f"{shard} is damaged ({e}): rebuilding from it")
            break
        last_of_finished = finished and counts.get("shards") == kept + 1
        expected = counts.get("samples", -1) - len(rows) if last_of_finished else opts.shard_size
        if len(found) != expected or len(found) > opts.shard_size:
            log(f"{shard} is damaged ({len(found)} of {expected} samples): rebuilding from it")
            break
        rows += found
        kept += 1
    keep = {names.shard(k) for k in range(kept)}
    for later in out.names(names.shard_pattern):
        if later not in keep:
            out.unlink(later)
    return kept, rows, errors


def build(opts: BuildOptions, *, progress: bool = True, log: Callable[[str], None] | None = None) -> BuildSummary:
    """Run one build (or one part of it). Raises SrDegradeError subclasses for what a user can fix.

    Arguments and the output folder are checked before anything heavy loads (the text encoder), so
    a refusal is immediate. One process at a time builds a given (local output folder, split, part): the
    others get a LockError naming the holder's PID. The lock is the operating system's, freed when
    its holder dies, so `--resume` after a kill -9 just works. (An output URL has no lock: one build
    at a time per URL is the user's to keep.)
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if opts.split is None:
        opts = replace(opts, split=_default_split(opts.src, opts.val))
    _validate(opts)
    i, n = opts.part
    names = ShardNames(Output(opts.out), f"part{i}of{n}-" if n > 1 else "", opts.split)
    if names.out.remote:
        _check_output(names, opts)
        return _build(opts, names, progress, log)
    folder = Path(names.out.where)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # folders the lock will make
    try:
        with exclusive(names.lock, f"the build of {names.prefix}{names.split} in {folder}"):
            _check_output(names, opts)  # fast refusal, before the source is walked or the encoder loads
            return _build(opts, names, progress, log)
    except BaseException:
        if created:  # a build that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                names.lock.unlink()
                for f in created:
                    f.rmdir()  # only when empty
        raise


@dataclass
class _Plan:
    """What a build makes: the source, the images of this part in order, and their shard key stems."""

    source: Any
    images: list[Any]
    stems: dict[str, str]
    source_id: str
    all_keys: list[str]


def _plan(opts: BuildOptions) -> _Plan:
    from .sources import open_source, split_holdout

    source = open_source(opts.src, root=opts.root, split=opts.split, check=opts.check_manifest)
    images = list(source.images)
    if opts.holdout:
        kept_images, held = split_holdout(images, opts.holdout)
        images = held if opts.take == "holdout" else kept_images
    stems = _unique_keys([im.key for im in images])
    i, n = opts.part
    images = images[i * len(images) // n : (i + 1) * len(images) // n]
    return _Plan(source, images, stems, _source_id(source), [im.key for im in source.images])


def _job(opts: BuildOptions) -> dict[str, Any]:
    """What a worker needs to make samples (build_worker.init_worker)."""
    return {
        "config": opts.config.to_dict(),
        "crop": opts.resolved_crop(),
        "crops": 1 if opts.val else opts.crops_per_image,
        "seed": opts.seed,
        "format": opts.prompt_format,
        "max_pixels": opts.max_pixels,
    }


def _build_info(opts: BuildOptions, plan: _Plan, fingerprint: dict[str, Any], encoder_id) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "status": "running",
        "fingerprint": fingerprint,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k != "config"},
        "config": opts.config.to_dict(),
        "source": plan.source.describe(),
        "encoder": encoder_id,
        "versions": _versions(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class _Run:
    """A build in progress: what the engine adds to, and what `_finish` writes at the end."""

    names: ShardNames
    opts: BuildOptions
    plan: _Plan
    ctx: SampleContext
    info: dict[str, Any]
    rows: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    summary: BuildSummary
    started: float
    first_done: float | None = None
    first_rows: int = 0
    status: str = "interrupted"

    def error_entry(self, position: int, key: str, reason: str) -> dict[str, Any]:
        path = str(self.plan.images[position].path)
        return {"image": text_key(key), "path": text_key(path), "reason": text_key(reason)}

    def mark_first(self) -> None:
        if self.first_done is None:
            self.first_done, self.first_rows = time.perf_counter(), len(self.rows)


def _build(opts: BuildOptions, names: ShardNames, progress: bool, log: Callable[[str], None]) -> BuildSummary:
    started = time.perf_counter()
    plan = _plan(opts)
    if opts.engine == "ray":
        from . import ray_build

        return ray_build.run(
            opts, names, plan, progress, log, job=_job(opts), members=_members(opts), finish=_finish,
            begin=lambda encoder_id, dim: _start(opts, names, plan, encoder_id, dim, log, started),
        )  # fmt: skip
    embedding, encoder_id, dim = None, None, None
    if opts.embed:
        from .embed import DEFAULT_ENCODER, load_text_encoder

        encoder = load_text_encoder(opts.text_encoder or DEFAULT_ENCODER)
        # One thread: the workers own the cores; a multi-threaded encoder in this process would
        # fight them (measured: 85-270 ms a prompt with 2 threads under load, 25 ms with 1).
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        embedding, encoder_id, dim = Embeddings(encoder), encoder.info.to_dict(), encoder.info.dim
    try:
        return _run_local(opts, names, plan, embedding, encoder_id, dim, log, progress, started)
    finally:
        if embedding is not None:
            torch.set_num_threads(torch_threads)


def _start(
    opts: BuildOptions, names: ShardNames, plan: _Plan, encoder_id, dim, log: Callable[[str], None], started: float
) -> _Run:
    """Check the output, write build.json (status running), and the run that engines fill."""
    fingerprint = _fingerprint(opts, plan.source_id, plan.all_keys, encoder_id)
    kept, rows, errors = _prepare_output(names, fingerprint, opts, log)
    info = _build_info(opts, plan, fingerprint, encoder_id)
    _write_json(names.out, names.build_json, info)
    if kept:
        log(f"resuming after {kept} complete shards ({len(rows)} samples)")
    ctx = SampleContext(plan.source_id, opts.seed, opts.prompt_format, opts.config.scale, encoder_id, dim)
    summary = BuildSummary(images=len(plan.images), resumed_from=kept)
    return _Run(names, opts, plan, ctx, info, rows, errors, summary, started)


def _run_local(
    opts: BuildOptions, names: ShardNames, plan: _Plan, embedding, encoder_id, dim, log, progress: bool, started
) -> BuildSummary:
    run = _start(opts, names, plan, encoder_id, dim, log, started)
    # Where to continue: the sample after the last one stored in a complete shard.
    position_of = {text_key(im.key): p for p, im in enumerate(plan.images)}
    start_pos, start_crop = 0, 0
    if run.rows:
        last = run.rows[-1]
        start_pos, start_crop = position_of[last["image"]], last["crop_index"] + 1
    run.errors = [e for e in run.errors if position_of.get(e["image"], -1) < start_pos]
    if start_crop >= (1 if opts.val else opts.crops_per_image):
        start_pos, start_crop = start_pos + 1, 0
    tasks = [
        (p, im.key, str(im.path), start_crop if p == start_pos else 0)
        for p, im in enumerate(plan.images)
        if p >= start_pos
    ]
    sink = ShardSink(names, opts.shard_size, run.summary.resumed_from)
    bar = Progress(len(tasks), f"build {names.prefix}{opts.split}", unit="img", enabled=progress)
    try:
        for result in _ordered_results(tasks, opts.workers or os.cpu_count() or 1, _job(opts)):
            run.mark_first()
            if "error" in result:
                run.errors.append(run.error_entry(result["position"], result["key"], result["error"]))
                _write_errors(run)
            for s in result.get("samples", []):
                key, members, meta = sample_members(plan.stems[result["key"]], result, s, run.ctx, embedding)
                run.rows.append(index_row(key, sink.add(members), meta))
            bar.update(1, extra=_tally(len(run.rows), sink.k, len(run.errors)))
        sink.finish()
        bar.extra = _tally(len(run.rows), sink.k, len(run.errors))
        run.status = "complete"
    except OSError as e:
        sink.abort()
        if e.errno in _FULL_DISK:
            run.status = "stopped: disk full"
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
        run.summary.shards = sink.k
        _finish(run)
    return run.summary


def _write_errors(run: _Run) -> None:
    """errors.jsonl, rewritten whole (it stays small): the images not used so far, in image order."""
    text = "".join(json.dumps(e) + "\n" for e in run.errors)
    with contextlib.suppress(OSError):
        run.names.out.write_bytes(run.names.errors, text.encode())


def _finish(run: _Run) -> None:
    """The index of the complete shards and build.json with the outcome (also after a failure)."""
    names, summary = run.names, run.summary
    summary.samples = len(run.rows)
    summary.errors = len(run.errors)
    complete = set(names.out.names(names.shard_pattern))
    summary.bytes = sum(_sizes(names.out, sorted(complete)))
    summary.seconds = time.perf_counter() - run.started
    if run.first_done is not None:
        summary.steady_seconds = time.perf_counter() - run.first_done
        summary.steady_samples = len(run.rows) - run.first_rows
    with contextlib.suppress(OSError, SrDegradeError):
        _write_errors(run)
        names.out.write_bytes(names.index, index_bytes([r for r in run.rows if r["shard"] in complete]))
        run.info.update(
            status=run.status,
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            counts={**asdict(summary), "samples_per_s": round(summary.rate, 2)},
            errors=len(run.errors),
        )
        _write_json(names.out, names.build_json, run.info)


def _sizes(out: Output, names: list[str]) -> list[int]:
    if out.remote:
        return [storage.size(out.path(n)) for n in names]
    return [(Path(out.where) / n).stat().st_size for n in names]


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
    write_index(out / "index.parquet", table.to_pylist())
    merged = {
        **json.loads(seen[0].read_text()),
        "status": "complete",
        "merged_parts": [str(seen[i]) for i in range(total)],
        "counts": counts,
    }
    merged["fingerprint"] = {**merged["fingerprint"], "part": [0, 1]}
    _write_json(Output(out), "build.json", merged)
    return {"parts": total, "samples": table.num_rows}
