"""Per-core throughput of sample_params + degrade, next to the codec floor of the shard builder.

The codec floor is what the builder must spend per sample anyway with the exact PNG settings it
uses (sr_degrade.imageio.PNG_PARAMS): decode the HR PNG, encode the HR crop and encode the LR.
Both are timed in the same run, interleaved round by round so machine noise hits both alike, on
one thread (cv2.setNumThreads(1)): the figures are per core. Goal: ratio degrade / floor <= 1.0
on 512 x 512 crops.

    python bench/degrade.py [--rounds 5] [--seconds 2]
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


def run_degrade(images: list[np.ndarray], cfg: DegradationConfig, start: int, seconds: float) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        hr = images[n % len(images)]
        degrade(hr, sample_params(cfg, sample_rng(0, "bench", start + n)))
        n += 1
    return n, time.perf_counter() - t0


def run_floor(pngs: list[bytes], lrs: list[np.ndarray], seconds: float) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        hr = decode_image(pngs[n % len(pngs)])
        encode_png(hr)
        encode_png(lrs[n % len(lrs)])
        n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per round and side")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    cfg = DegradationConfig()
    print(f"one thread; PNG params {PNG_PARAMS}; {args.rounds} rounds x {args.seconds} s per side\n")
    print("| case | degrade samples/s | floor samples/s | ratio degrade / floor (time) |")
    print("|---|---|---|---|")
    for label, images in (("512x512 crops", crops_512()), ("2040x1356 image", image_2k())):
        pngs = [encode_png(im) for im in images]
        lrs = [degrade(im, sample_params(cfg, sample_rng(1, "lr", i))) for i, im in enumerate(images)]
        rates_d, rates_f = [], []
        for r in range(args.rounds):
            n, t = run_degrade(images, cfg, r * 100_000, args.seconds)
            rates_d.append(n / t)
            n, t = run_floor(pngs, lrs, args.seconds)
            rates_f.append(n / t)
        d, f = statistics.median(rates_d), statistics.median(rates_f)
        print(f"| {label} | {d:.1f} | {f:.1f} | {f / d:.2f} |")


if __name__ == "__main__":
    main()
