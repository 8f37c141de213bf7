"""Shard builder and reader throughput, each next to its codec floor measured in the same run.

Build: samples/s (source decode, crop, degrade, PNG encode, embed with the offline
MiniLM encoder, tar writing, index) per worker with 1 and 2 workers, on the bundled photos and on
a larger synthetic folder, next to the codec floor per core: decoding each source image once and
PNG-encoding every HR crop and LR with the builder's settings. "End-to-end" includes start-up
(importing torch, loading the encoder, starting workers: seconds, whatever the size of the build);
"steady" counts from the first image's result on: the rate a long build runs at. "End-to-end" includes start-up
(importing torch, loading the encoder, starting workers: seconds, whatever the size of the build);
"steady" counts from the first image's result on, the rate a long build runs at. Goals: build >= 50% of the floor
per worker, scaling efficiency (rate at 2 workers / 2 x rate at 1) >= 0.8.

With --engine ray: the same builds on a local Ray of 1 and 2 CPUs (`--engine ray`, one task per shard of 8
samples), steady samples/s per worker next to the local engine's measured in the same run, and the Ray
engine's scaling from 1 to 2 workers. Goal: >= 0.9 of the local per-worker rate.

Reader: samples/s of `open_shards(crop=256)` delivering aligned 256x256 training crops from
512x512 shards, in one process, next to the PNG-decode floor of the same samples (HR + LR).
Goal: >= 80% of the floor.

    python bench/build.py [--images 48] [--encoder minilm] [--engine ray]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from sr_degrade import DegradationConfig, degrade, read_image, sample_params
from sr_degrade.build import BuildOptions, build
from sr_degrade.imageio import decode_image, encode_png, write_image
from sr_degrade.params import sample_rng
from sr_degrade.samples import load_sample, sample_paths
from sr_degrade.shards import open_shards


def synthetic_folder(folder: Path, count: int) -> list[Path]:
    """`count` 1200x900 PNG photos: crops of the bundled photos enlarged (real textures, varied)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["astronaut", "chelsea", "coffee", "hubble_deep_field", "retina", "rocket"]
    paths = []
    for i in range(count):
        img = load_sample(names[i % len(names)])
        h, w = img.shape[:2]
        y, x = (i * 37) % (h // 3), (i * 53) % (w // 3)
        region = img[y : y + 2 * h // 3, x : x + 2 * w // 3]
        path = folder / f"img_{i:04d}.png"
        write_image(path, cv2.resize(region, (1200, 900), interpolation=cv2.INTER_CUBIC))
        paths.append(path)
    return paths


def codec_floor(paths: list[Path], crop: int, crops: int) -> float:
    """Samples/s on one core of the codec work a build cannot avoid."""
    cfg = DegradationConfig()
    work = []
    for p in paths:
        img = read_image(p)
        for c in range(crops):
            hr = np.ascontiguousarray(img[:crop, :crop])
            work.append((p, hr, degrade(hr, sample_params(cfg, sample_rng(0, p.name, c)))))
    t0 = time.perf_counter()
    last = None
    for p, hr, lr in work:
        if p != last:
            read_image(p)
            last = p
        encode_png(hr)
        encode_png(lr)
    return len(work) / (time.perf_counter() - t0)


def timed_build(
    src: str, out: Path, workers: int, crop: int, crops: int, encoder: str, engine: str = "local", shard_size: int = 100
) -> tuple[int, float, float]:
    """(samples, end-to-end samples/s with start-up, steady samples/s after the first image, or shard with Ray)."""
    opts = BuildOptions(
        src=src,
        out=out,
        workers=workers,
        crop_size=crop,
        crops_per_image=crops,
        text_encoder=encoder,
        shard_size=shard_size,
        overwrite=True,
        engine=engine,
    )
    ray = None
    if engine == "ray":  # a local Ray of `workers` CPUs, started outside the timing (a cluster is up already)
        import ray

        os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default 15 would lose the cores to anything else
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        t0 = time.perf_counter()
        summary = build(opts, progress=False)
        total = time.perf_counter() - t0
    finally:
        if ray is not None:
            ray.shutdown()
    return summary.samples, summary.samples / total, summary.steady_samples / summary.steady_seconds


def ray_table(cases, tmp: Path, encoder: str) -> None:
    """The Ray engine against the local engine, the same builds in the same run."""
    print(
        "| set | workers | local steady per worker | ray steady per worker | ray / local | ray end-to-end "
        "| ray scaling |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, src, _paths, crop, crops in cases:
        one = None
        for workers in (1, 2):
            _, _, local = timed_build(src, tmp / "out", workers, crop, crops, encoder, shard_size=8)
            _, end_to_end, rate = timed_build(src, tmp / "out_ray", workers, crop, crops, encoder, "ray", 8)
            one = one or rate
            print(
                f"| {label} | {workers} | {local / workers:.2f} | {rate / workers:.2f} | {rate / local:.2f} "
                f"| {end_to_end:.2f} | {rate / (workers * one):.2f} |"
            )


def reader_rates(shards: Path, n: int) -> tuple[float, float]:
    stream = open_shards(shards, crop=256, mode="train", shuffle=1, seed=0)
    it = iter(stream)
    next(it)  # open the first shard outside the timing
    t0 = time.perf_counter()
    for _ in itertools.islice(it, n):
        pass
    reader = n / (time.perf_counter() - t0)
    raws = []
    for shard in sorted(shards.glob("*.tar")):
        with tarfile.open(shard) as tar:
            raws += [tar.extractfile(m).read() for m in tar if m.name.endswith((".hr.png", ".lr.png"))]
    pairs = list(zip(raws[0::2], raws[1::2]))
    t0 = time.perf_counter()
    for a, b in itertools.islice(itertools.cycle(pairs), n):
        decode_image(a)
        decode_image(b)
    return reader, n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48, help="images in the synthetic folder")
    ap.add_argument("--encoder", default="minilm", help="text encoder of the builds")
    ap.add_argument("--engine", choices=("local", "ray"), default="local", help="ray: the Ray engine against local")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    print(f"{os.cpu_count()} cores; encoder {args.encoder}\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synth = synthetic_folder(tmp / "synth", args.images)
        cases = [
            ("sample photos (6, crop 256 x2)", "sample", sample_paths(), 256, 2),
            (f"synthetic folder ({args.images} x 1200x900, crop 512 x2)", str(tmp / "synth"), synth, 512, 2),
        ]
        if args.engine == "ray":  # the 12-sample set makes 2 shards: no steady state to measure
            ray_table(cases[1:], tmp, args.encoder)
            return
        print(
            "| set | workers | samples | end-to-end samples/s | steady samples/s | steady per worker "
            "| floor per core | per worker / floor | scaling |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for label, src, paths, crop, crops in cases:
            floor = codec_floor(paths, crop, crops)
            one = None
            for workers in (1, 2):
                n, end_to_end, rate = timed_build(src, tmp / "out", workers, crop, crops, args.encoder)
                one = one or rate
                print(
                    f"| {label} | {workers} | {n} | {end_to_end:.1f} | {rate:.1f} | {rate / workers:.1f} "
                    f"| {floor:.1f} | {rate / workers / floor:.2f} | {rate / (workers * one):.2f} |"
                )
        timed_build(str(tmp / "synth"), tmp / "read", 2, 512, 2, args.encoder)
        reader, floor = reader_rates(tmp / "read", 200)
        print("\n| reader (256 crops from 512 shards) | samples/s | PNG-decode floor | ratio |")
        print("|---|---|---|---|")
        print(f"| one process | {reader:.1f} | {floor:.1f} | {reader / floor:.2f} |")


if __name__ == "__main__":
    main()
