"""Throughput of `sr_degrade.torch.DegradeOnTheFly` through a DataLoader, next to the bare work on one core.

The bare rate is what one core does with no dataset, DataLoader or tensors: decode each photo once and,
for each of its crops, draw the crop position and `sample_params`, `degrade` and `describe` (the same
work per sample as the dataset, same photos, same crop size, same generators), on one thread
(cv2.setNumThreads(1), as each DataLoader worker runs). The DataLoader rates count whole epochs with
persistent workers started by an untimed warm-up epoch (worker start-up excluded); all three
are measured in the same run, interleaved round by round so machine noise hits them alike.
Goals (issue 13): per worker at least 80% of the bare rate; 2 workers at least 1.6x one.

    python bench/onthefly.py [--crop 256] [--crops-per-image 32] [--rounds 3] [--batch 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from sr_degrade import DegradationConfig, degrade, describe, read_image, sample_params
from sr_degrade.params import sample_rng
from sr_degrade.torch import DegradeOnTheFly, collate


def bare(data: DegradeOnTheFly, epoch: int) -> float:
    """Samples/s of decode (once per photo) + crop + sample_params + degrade + describe, one thread."""
    cv2.setNumThreads(1)
    cfg, crop, k = DegradationConfig(), data.crop, data.crops_per_image
    n, start = 0, time.perf_counter()
    for img in data.images:
        full = read_image(img.path)
        h, w = full.shape[:2]
        for c in range(k):
            rng = sample_rng(data.seed, img.key, epoch * k + c)
            y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            hr = np.ascontiguousarray(full[y : y + crop, x : x + crop])
            params = sample_params(cfg, rng)
            degrade(hr, params)
            describe(params, rng=rng, cfg=cfg)
            n += 1
    return n / (time.perf_counter() - start)


def loader_rate(loader: DataLoader, data: DegradeOnTheFly, epoch: int) -> float:
    """Samples/s of one whole epoch, workers already running (persistent, started by a warm-up epoch)."""
    data.set_epoch(epoch)
    n, start = 0, time.perf_counter()
    for batch in loader:
        n += len(batch["lq"])
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--crops-per-image", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = DegradeOnTheFly("sample", crop=args.crop, crops_per_image=args.crops_per_image, seed=0)
    loaders = {
        w: DataLoader(data, batch_size=args.batch, num_workers=w, collate_fn=collate, persistent_workers=True)
        for w in (1, 2)
    }
    for w in (1, 2):
        loader_rate(loaders[w], data, 99)  # warm-up: starts the persistent workers
    rates: dict[str, list[float]] = {"bare": [], "w1": [], "w2": []}
    for r in range(args.rounds):
        rates["bare"].append(bare(data, r))
        rates["w1"].append(loader_rate(loaders[1], data, r))
        rates["w2"].append(loader_rate(loaders[2], data, r))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"DegradeOnTheFly('sample', crop={args.crop}, crops_per_image={args.crops_per_image}): "
        f"{len(data)} samples an epoch, batch {args.batch}, {args.rounds} rounds (median), "
        f"{torch.get_num_threads()} torch thread(s) in the main process"
    )
    print("| reader | samples/s | per worker vs bare | goal |")
    print("|---|---|---|---|")
    print(f"| bare, 1 core (decode once per photo + sample_params + degrade + describe) | {med['bare']:.1f} | | |")
    print(f"| DataLoader, 1 worker | {med['w1']:.1f} | {med['w1'] / med['bare']:.0%} | >= 80% |")
    print(f"| DataLoader, 2 workers | {med['w2']:.1f} | {med['w2'] / 2 / med['bare']:.0%} | >= 80% |")
    print(f"2 workers / 1 worker: {med['w2'] / med['w1']:.2f}x (goal >= 1.6x)")
    print("all rounds: " + ", ".join(f"{k} " + " ".join(f"{v:.1f}" for v in vs) for k, vs in rates.items()))


if __name__ == "__main__":
    main()
