"""Per-core throughput of sample_params + degrade, next to the codec floor of the shard builder.

The codec floor is what the builder must spend per sample anyway with the exact PNG settings it
uses (sr_degrade.imageio.PNG_PARAMS): decode the HR PNG, encode the HR crop and encode the LR.
Both are timed in the same run, interleaved round by round so machine noise hits both alike, on
one thread (cv2.setNumThreads(1)): the figures are per core. Goal: ratio degrade / floor <= 1.0
on 512 x 512 crops.

    python bench/degrade.py [--rounds 5] [--samples 48]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from sr_degrade import DegradationConfig, degrade, sample_params
from sr_degrade.imageio import PNG_PARAMS, decode_image, encode_png
from sr_degrade.params import sample_rng
from sr_degrade.samples import load_sample


def crops_512() -> list[np.ndarray]:
    """512 x 512 crops of real bundled photos (the builder's default crop size)."""
    out = [load_sample("astronaut")]
    for name in ("retina", "hubble_deep_field"):
        img = load_sample(name)
        h, w = img.shape[:2]
        out += [img[y : y + 512, x : x + 512] for y in (0, h - 512) for x in (0, w - 512)]
    coffee = cv2.resize(load_sample("coffee"), (1020, 680), interpolation=cv2.INTER_CUBIC)
    out += [coffee[:512, :512], coffee[-512:, -512:]]
    return [np.ascontiguousarray(c) for c in out]


def image_2k() -> list[np.ndarray]:
    """One 2040 x 1356 photo (DIV2K/LSDIR-like size), synthesised by enlarging the bundled coffee."""
    big = cv2.resize(load_sample("coffee"), (2040, 1360), interpolation=cv2.INTER_CUBIC)
    return [np.ascontiguousarray(big[:1356])]


def run_degrade(jobs: list[tuple[np.ndarray, int]], cfg: DegradationConfig) -> float:
    """Seconds for sample_params + degrade over every (image, sample index) job."""
    t0 = time.perf_counter()
    for hr, index in jobs:
        degrade(hr, sample_params(cfg, sample_rng(0, "bench", index)))
    return time.perf_counter() - t0


def run_floor(jobs: list[tuple[bytes, np.ndarray]]) -> float:
    """Seconds for the builder's unavoidable codec work per job: decode the HR, encode HR and LR."""
    t0 = time.perf_counter()
    for png, lr in jobs:
        encode_png(decode_image(png))
        encode_png(lr)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case (the median is shown)")
    ap.add_argument("--samples", type=int, default=48, help="degradations per round on 512 crops (a quarter on 2K)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    cfg = DegradationConfig()
    print(f"one thread; PNG params {PNG_PARAMS}; {args.rounds} rounds, the same draws every round\n")
    print("| case | samples per round | degrade samples/s | floor samples/s | ratio degrade / floor (time) |")
    print("|---|---|---|---|---|")
    for label, images, n in (
        ("512x512 crops", crops_512(), args.samples),
        ("2040x1356 image", image_2k(), max(4, args.samples // 4)),
    ):
        # A fixed set of draws, so every round times the same work on both sides.
        jobs = [(images[i % len(images)], i) for i in range(n)]
        floor_jobs = [(encode_png(hr), degrade(hr, sample_params(cfg, sample_rng(0, "bench", i)))) for hr, i in jobs]
        t_deg, t_floor = [], []
        for _ in range(args.rounds):
            t_deg.append(run_degrade(jobs, cfg))
            t_floor.append(run_floor(floor_jobs))
        d, f = statistics.median(t_deg), statistics.median(t_floor)
        print(f"| {label} | {n} | {n / d:.1f} | {n / f:.1f} | {d / f:.2f} |")


if __name__ == "__main__":
    main()
