"""How visible is each degradation component in the LR? The pilot of issue 11, item 4.

For random HR crops of the bundled photos and random degradations of the default config, degrade
each crop twice: as drawn, and with one component left out (same everything else, the noise field
included). The PSNR between the two LR images says how much that component changed the pixels the
estimator sees; a level whose change is mostly below the LR's own quantisation (PSNR above ~45 dB,
an rms change under 1.5/255) cannot be told from "none" by any estimator. Prints, per component and
level, the median PSNR and the share of samples above 45 dB, also split by resize1's direction
(everything before resize2 is shrunk by 4 x gamma1).

Then a ceiling: with the omission config (so "none" occurs), the best accuracy any rule that reads
only the size of the component's true effect on the LR (its rms change, 0 when omitted) can reach:
the best ordered thresholds none < light < medium < heavy, fitted on one half of the samples and
scored on the other. An estimator sees less than this (it must tell the effect from the photo's own
texture) and a little more (the effect's shape, e.g. noise upsampled by resize2 into blobs), so the
ceiling is a guide, not a bound; where it sits near the majority baseline, the levels overlap in the LR.

    .venv/bin/python tools/estimator_pilot.py [--samples 400] [--crop 256]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from sr_degrade import DegradationConfig, bins, degrade, sample_params
from sr_degrade.samples import SAMPLE_NAMES, load_sample
from sr_degrade.text import LEVELS, NONE

INVISIBLE_DB = 45.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def draws(photos: list[np.ndarray], cfg: DegradationConfig, rng: np.random.Generator, n: int, crop: int):
    """n random crops, each degraded as drawn and once without each of blur, noise and jpeg that it has:
    (levels, lr, {component: lr without it})."""
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        h, w = img.shape[:2]
        y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        hr = np.ascontiguousarray(img[y : y + crop, x : x + crop])
        params = sample_params(cfg, rng)
        without = {}
        for comp in ("blur", "noise", "jpeg"):
            if getattr(params, comp) is not None:
                rest = tuple(o for o in params.order if o != comp)
                without[comp] = degrade(hr, dataclasses.replace(params, **{comp: None}, order=rest))
        yield bins(params, cfg), degrade(hr, params), without


def best_thresholds(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Ordered cut points (k - 1) on feature x maximising matches with ordered labels y in 0..k-1."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    n = len(xs)
    # best[j][i]: most matches labelling the first i sorted samples with classes 0..j (in order).
    hits = np.stack([np.concatenate([[0], np.cumsum(ys == c)]) for c in range(k)])  # [k, n + 1]
    best = np.full((k, n + 1), -1, np.int64)
    arg = np.zeros((k, n + 1), np.int64)
    best[0] = hits[0]
    for j in range(1, k):
        # best[j][i] = max over m <= i of best[j-1][m] + hits[j][i] - hits[j][m]
        cand = best[j - 1] - hits[j]
        run = np.maximum.accumulate(cand)
        runarg = np.zeros(n + 1, np.int64)
        for i in range(1, n + 1):
            runarg[i] = i if cand[i] >= cand[runarg[i - 1]] else runarg[i - 1]
        best[j] = run + hits[j]
        arg[j] = runarg
    cuts, i = [], n
    for j in range(k - 1, 0, -1):
        i = arg[j][i]
        cuts.append(xs[i - 1] if 0 < i <= n else (-np.inf if i == 0 else np.inf))
    return np.asarray(cuts[::-1])


def ceiling(comp: str, samples: list[tuple[float, str]]) -> tuple[float, float]:
    """(held-out accuracy of the best thresholds on the effect size, majority baseline) for one component."""
    classes = [NONE, *LEVELS]
    x = np.asarray([s[0] for s in samples])
    y = np.asarray([classes.index(s[1]) for s in samples])
    half = len(x) // 2
    cuts = best_thresholds(x[:half], y[:half], len(classes))
    pred = np.searchsorted(cuts, x[half:], side="right")
    return float((pred == y[half:]).mean()), float(np.bincount(y[half:]).max() / len(y[half:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--crop", type=int, default=256, help="HR crop side (LR side is crop / 4)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = DegradationConfig()
    rng = np.random.default_rng(args.seed)
    photos = [load_sample(n) for n in SAMPLE_NAMES]
    rows: dict[tuple[str, str, str], list[float]] = {}
    for levels, full, without in draws(photos, cfg, rng, args.samples, args.crop):
        direction = levels.get("resize1", "unchange")
        for comp, lr in without.items():
            db = psnr(full, lr)
            for d in (direction, "all"):
                rows.setdefault((comp, levels[comp], d), []).append(db)
    print(f"{args.samples} samples, HR crops of {args.crop} px, LR {args.crop // 4} px; PSNR (dB) of the LR with vs")
    print(f"without the component; 'invisible' = share above {INVISIBLE_DB:.0f} dB (rms change < 1.4/255)\n")
    print("| component | level | n | median dB | invisible % | invisible % after upsample | after downsample |")
    print("|---|---|---|---|---|---|---|")
    for comp in ("blur", "noise", "jpeg"):
        for level in ("light", "medium", "heavy"):
            all_ = rows.get((comp, level, "all"), [])
            if not all_:
                continue

            def share(d: str, comp: str = comp, level: str = level) -> str:
                v = rows.get((comp, level, d), [])
                return f"{100 * np.mean(np.asarray(v) > INVISIBLE_DB):.0f} (n {len(v)})" if v else "-"

            print(
                f"| {comp} | {level} | {len(all_)} | {np.median(all_):.1f} | "
                f"{100 * np.mean(np.asarray(all_) > INVISIBLE_DB):.0f} | {share('upsample')} | {share('downsample')} |"
            )
    ceilings(args, photos)


def ceilings(args, photos) -> None:
    from promptsr.estimator import omit_config_path

    cfg = DegradationConfig.load(omit_config_path())
    rng = np.random.default_rng(args.seed + 1)
    effects: dict[str, list[tuple[float, str]]] = {"blur": [], "noise": [], "jpeg": []}
    for levels, full, without in draws(photos, cfg, rng, args.samples, args.crop):
        for comp in effects:
            if comp not in without:
                effects[comp].append((0.0, NONE))
                continue
            rms = float(np.sqrt(np.mean((full.astype(np.float64) - without[comp]) ** 2)))
            effects[comp].append((rms, levels[comp]))
    print(f"\nCeiling from the effect's size alone (omission config, {args.samples} samples; half fit, half scored):\n")
    print("| component | ceiling accuracy % | majority baseline % | ceiling gain (points) |")
    print("|---|---|---|---|")
    for comp, samples in effects.items():
        acc, maj = ceiling(comp, samples)
        print(f"| {comp} | {100 * acc:.1f} | {100 * maj:.1f} | {100 * (acc - maj):+.1f} |")


if __name__ == "__main__":
    main()
