"""The Ray engine of the builder: `sr-degrade build --engine ray [--address ADDR]`, the same shards as the
local build (same keys, same sample bytes, same index rows), one Ray task per output shard.

    build(BuildOptions(src="s3://bucket/photos/", out="s3://bucket/shards/train", engine="ray", address="auto"))

How it gives the local build's bytes with shards written in any order, on any node:

1. A scan (Ray tasks over chunks of images) reads every image's header and finds the images the local
   build would drop without decoding them: unreadable, over --max-pixels, smaller than the crop (the
   same checks and messages as `build_worker`). Every other image gives exactly `crops per image`
   samples, so sample i's shard, i // shard_size, is known before any image is decoded: the plan.
2. One task per shard decodes its images, makes its samples with `build_worker` (pure functions of
   seed, key and crop index) and writes the shard whole through `shard_writer`, like the local engine.
   Its prompts' embeddings come from one encoder actor on the driver's node, one thread, each prompt
   encoded once: the bytes of the local build, which encodes in its main process with one thread.
3. An image whose header passed but whose pixels do not decode (rare: a corrupt body) is reported by its
   task; the driver records it, waits for the tasks in flight, and redoes the plan from that image on.
4. The driver writes errors.jsonl, index.parquet (shard order) and build.json. `--resume` keeps every
   shard whose samples are the plan's (a shard exists only once complete) and builds the others, so
   a killed driver or worker costs only the shards in flight (Ray itself retries a task whose worker died).

Every worker needs sr-degrade installed (the same version) and must reach the source and the output:
an object store URL, or a folder shared by every node. A local Ray (no --address) uses `workers` CPUs.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from .build_worker import Embeddings, SampleContext, init_worker, process_image, sample_members, size_error
from .errors import BuildError, ImageError
from .imageio import read_image, read_image_size
from .progress import Progress, plural
from .shard_writer import Output, ShardFile, ShardNames, index_row, shard_rows

#: Images per scan task.
SCAN_CHUNK = 64


@dataclass(frozen=True)
class ShardSpec:
    """What shard k holds: (position, key, path, first crop, stop crop) per image, in sample order."""

    k: int
    name: str
    items: tuple[tuple[int, str, str, int, int], ...]
    keys: tuple[str, ...] = field(default=())


def plan_shards(
    images: list[Any], stems: dict[str, str], failed: set[int], crops: int, shard_size: int, names: ShardNames
) -> list[ShardSpec]:
    """The shards of a build whose images at positions `failed` give no sample."""
    samples = [(p, im, c) for p, im in enumerate(images) if p not in failed for c in range(crops)]
    specs = []
    for k in range(0, len(samples), shard_size):
        items: list[list] = []
        for p, im, c in samples[k : k + shard_size]:
            if items and items[-1][0] == p:
                items[-1][4] = c + 1
            else:
                items.append([p, im.key, str(im.path), c, c + 1])
        keys = tuple(f"{stems[im.key]}_c{c}" for _, im, c in samples[k : k + shard_size])
        index = k // shard_size
        specs.append(ShardSpec(index, names.shard(index), tuple(tuple(i) for i in items), keys))
    return specs


def _scan(chunk: list[tuple[int, str]], crop: int, scale: int, max_pixels: int) -> list[tuple[int, str]]:
    """(position, reason) of the images in `chunk` that the local build would drop, from their headers."""
    dropped = []
    for position, path in chunk:
        try:
            w, h = read_image_size(path, max_pixels)
        except ImageError as e:
            dropped.append((position, str(e)))
            continue
        if size_error(path, w, h, crop, scale) is not None:
            # Small, so cheap to decode: the reason then names the decoded size (EXIF turns some JPEGs).
            try:
                img = read_image(path, max_pixels)
            except ImageError as e:
                dropped.append((position, str(e)))
                continue
            dropped.append((position, size_error(path, img.shape[1], img.shape[0], crop, scale) or ""))
    return dropped


class _Encoder:
    """The Ray actor that encodes prompts: one text encoder, one thread, each prompt once."""

    def __init__(self, name: str):
        import torch

        from .embed import load_text_encoder

        torch.set_num_threads(1)
        encoder = load_text_encoder(name)
        self.info, self.embeddings = (encoder.info.to_dict(), encoder.info.dim), Embeddings(encoder)

    def describe(self) -> tuple[dict[str, Any], int]:
        return self.info

    def embed(self, prompts: list[str]) -> dict[str, tuple[bytes, int]]:
        return {p: self.embeddings(p) for p in prompts}


def _build_shard(spec: ShardSpec, job: dict[str, Any], ctx: SampleContext, stems: dict[str, str], out, encoder):
    """Make and write one shard; {"k", "rows", "bytes"}, or {"k", "failed": [(position, key, reason)]}
    when an image of it does not decode (nothing is written then)."""
    import ray

    init_worker(job)
    results = []
    for position, key, path, first, stop in spec.items:
        result = process_image(position, key, path, first, stop)
        if "error" in result:
            return {"k": spec.k, "failed": [(position, key, result["error"])]}
        results.append(result)
    embedding = None
    if encoder is not None:
        table = ray.get(encoder.embed.remote(sorted({s["prompt"] for r in results for s in r["samples"]})))
        embedding = table.__getitem__
    shard, rows = ShardFile(Output(out), spec.name), []
    try:
        for result in results:
            for s in result["samples"]:
                key, members, meta = sample_members(stems[result["key"]], result, s, ctx, embedding)
                shard.write(members)
                rows.append(index_row(key, spec.name, meta))
        size = shard.commit()
    except BaseException:
        shard.drop()
        raise
    return {"k": spec.k, "rows": rows, "bytes": size}


def _check_address(address: str) -> None:
    """Refuse at once a cluster address nothing listens on (Ray itself retries for minutes)."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise BuildError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as e:
        raise BuildError(
            f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
            "`ray start --head` on that machine, or check the host and port"
        ) from None


@contextlib.contextmanager
def connected(address: str | None, workers: int):
    """Ray, connected to `address` (or a local Ray of `workers` CPUs), for the `with` block; one that this
    process already holds is used as it is and left running."""
    try:
        import ray
    except ImportError:
        raise BuildError("--engine ray needs Ray: pip install 'sr-degrade[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        _check_address(address)
        ray.init(address=address, **quiet)
    else:
        # Ray runs its workers at nice 15; a local build is the machine's job, as the local engine's workers are.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=workers or os.cpu_count() or 1, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()


def _kept(out: Output, specs: list[ShardSpec], members: set[str], log) -> dict[int, list[dict[str, Any]]]:
    """Rows of the shards already complete with the plan's samples (for --resume); others are rebuilt."""
    present = set(out.names("*.tar"))
    kept = {}
    for spec in specs:
        if spec.name not in present:
            continue
        try:
            with out.open_read(spec.name) as f:
                rows = shard_rows(f, spec.name, members)
        except Exception as e:
            log(f"{spec.name} is damaged ({e}): rebuilding it")
            continue
        if tuple(r["key"] for r in rows) == spec.keys:
            kept[spec.k] = rows
        else:
            log(f"{spec.name} holds other samples than this build's: rebuilding it")
    return kept


def run(opts, names: ShardNames, plan, progress: bool, log: Callable[[str], None], *, begin, finish, job, members):
    """The build of `plan` on Ray (build._build's arguments); `begin(encoder_id, dim)` checks the output and
    starts the run record, `finish(run)` writes errors.jsonl, the index and build.json; `job` is what a
    worker needs (build_worker.init_worker), `members` the member names of every sample."""
    with connected(opts.address, opts.workers) as ray:
        encoder, encoder_id, dim = None, None, None
        if opts.embed:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            from .embed import DEFAULT_ENCODER

            node = ray.get_runtime_context().get_node_id()
            here = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
            name = opts.text_encoder or DEFAULT_ENCODER
            # Named: the next build in this Ray session (a notebook, a test) finds it loaded.
            actor = ray.remote(num_cpus=0)(_Encoder).options(
                name=f"sr-degrade-encoder:{name}", get_if_exists=True, scheduling_strategy=here
            )
            encoder = actor.remote(name)
            encoder_id, dim = ray.get(encoder.describe.remote())
        run_ = begin(encoder_id, dim)
        try:
            _drive(ray, opts, names, plan, run_, job, members, encoder, progress, log)
            run_.status = "complete"
        finally:
            finish(run_)
    return run_.summary


def _drive(ray, opts, names, plan, run_, job, members, encoder, progress, log) -> None:
    """Scan, plan, submit the missing shards (a bounded window in flight), re-plan after a decode failure."""
    scan = ray.remote(num_cpus=1)(_scan)
    paths = [(p, str(im.path)) for p, im in enumerate(plan.images)]
    chunks = [paths[i : i + SCAN_CHUNK] for i in range(0, len(paths), SCAN_CHUNK)]
    refs = [scan.remote(c, job["crop"], opts.config.scale, opts.max_pixels) for c in chunks]
    reasons = {p: r for found in ray.get(refs) for p, r in found}
    position_of = {_text_key(im.key): p for p, im in enumerate(plan.images)}
    for e in run_.errors:  # decode failures found by an earlier run of this build
        p = position_of.get(e["image"])
        if p is not None and p not in reasons:
            reasons[p] = e["reason"]
    stems, out = ray.put(plan.stems), str(names.out)
    done: dict[int, list[dict[str, Any]]] = {}
    try:
        _shards(ray, opts, names, plan, run_, job, members, encoder, progress, log, reasons, done, stems, out)
    finally:  # the rows of the complete shards, also when the build is interrupted
        run_.rows = [r for k in sorted(done) for r in done[k]]
    run_.errors = [run_.error_entry(p, plan.images[p].key, reasons[p]) for p in sorted(reasons)]


def _shards(ray, opts, names, plan, run_, job, members, encoder, progress, log, reasons, done, stems, out) -> None:
    """Plan, submit the missing shards into `done`, and plan again after a decode failure."""
    build_shard = ray.remote(num_cpus=1, max_retries=3)(_build_shard)
    position_of = {_text_key(im.key): p for p, im in enumerate(plan.images)}
    while True:
        specs = plan_shards(plan.images, plan.stems, set(reasons), job["crops"], opts.shard_size, names)
        want = {s.name for s in specs}
        for stale in names.out.names(names.shard_pattern):
            if stale not in want:
                names.out.unlink(stale)
        if not done:
            done.update(_kept(names.out, specs, members, log))
            run_.summary.resumed_from = len(done)
            if done:
                log(f"resuming with {plural(len(done), 'complete shard')} kept")
        todo = [s for s in specs if s.k not in done]
        bar = Progress(len(specs), f"build {names.prefix}{opts.split} (ray)", unit="shard", enabled=progress)
        bar.update(len(done))
        failed = _submit(ray, build_shard, todo, job, run_.ctx, stems, out, encoder, done, bar, run_)
        bar.close()
        if not failed:
            break
        for position, _key, reason in failed:
            reasons[position] = reason
        first = min(position for position, _, _ in failed)
        for k in [k for k, rows in done.items() if any(position_of[r["image"]] >= first for r in rows)]:
            del done[k]
        log(f"{plural(len(failed), 'image')} did not decode: planning again from {plan.images[first].key}")
    run_.summary.shards = len(specs)


def _text_key(key: str) -> str:
    from .shards import text_key

    return text_key(key)


def _submit(ray, build_shard, todo, job, ctx, stems, out, encoder, done, bar, run_) -> list:
    """Run the shard tasks, at most twice the cluster's CPUs in flight; decode failures, after the rest finish."""
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending, queue, failed = [], list(todo), []
    samples = sum(len(rows) for rows in done.values())
    while queue or pending:
        while queue and len(pending) < window and not failed:
            pending.append(build_shard.remote(queue.pop(0), job, ctx, stems, out, encoder))
        if not pending:
            break
        ready, pending = ray.wait(pending, num_returns=1)
        result = ray.get(ready[0])
        run_.mark_first()
        if "failed" in result:
            failed += result["failed"]
            continue
        done[result["k"]] = result["rows"]
        samples += len(result["rows"])
        bar.update(1, extra=f"{plural(samples, 'sample')}, {plural(len(failed), 'decode failure')}")
    return failed
