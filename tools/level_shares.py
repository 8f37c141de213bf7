"""Print the level shares of N drawn degradations (the figures docs/degradation.md quotes).

python tools/level_shares.py [-n 100000] [--config cfg.yaml] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np

from sr_degrade import DegradationConfig, bins, sample_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--config", help="YAML/JSON degradation config (default: the paper's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = DegradationConfig.load(args.config) if args.config else DegradationConfig()
    rng = np.random.default_rng(args.seed)
    counts: dict[str, Counter] = defaultdict(Counter)
    for _ in range(args.n):
        for component, level in bins(sample_params(cfg, rng), cfg).items():
            counts[component][level] += 1
    print(f"{args.n} draws\n\n| component | level | share |\n|---|---|---|")
    for component, levels in counts.items():
        for level, k in sorted(levels.items(), key=lambda kv: -kv[1]):
            print(f"| {component} | {level} | {k / args.n:.4f} |")


if __name__ == "__main__":
    main()
