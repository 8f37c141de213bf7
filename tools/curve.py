"""A training run's curve as a markdown table: at each validation, the step, the mean training loss
over the preceding log windows, the fixed-batch loss, validation PSNR-Y / SSIM-Y next to bicubic, and
the prompt signal (held-out epsilon loss under the true, empty and wrong prompt, with the paired
differences and their standard errors).

    python tools/curve.py demo_out/run_small
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python tools/curve.py RUN_DIR", file=sys.stderr)
        return 2
    path = Path(sys.argv[1]) / "metrics.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        print(f"error: cannot read {path}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(
        "| step | train loss | fixed-batch loss | val PSNR-Y | bicubic | val SSIM-Y | bicubic | eps true | "
        "empty - true | wrong - true |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    losses: list[float] = []
    fixed = float("nan")
    for r in rows:
        if "loss" in r:
            losses.append(r["loss"])
        if "fixed_loss" in r:
            fixed = r["fixed_loss"]
        if "val_psnr" not in r:
            continue
        train = sum(losses) / len(losses) if losses else float("nan")
        losses = []
        signal = "| | |"
        if "val_eps_true" in r:
            diffs = [
                f"{r[f'val_eps_{c}_minus_true']:+.5f} +- {r[f'val_eps_{c}_minus_true_se']:.5f}"
                for c in ("empty", "wrong")
            ]
            signal = f"{r['val_eps_true']:.5f} | {diffs[0]} | {diffs[1]}"
        print(
            f"| {r['step']} | {train:.4f} | {fixed:.4f} | {r['val_psnr']:.2f} | {r['val_psnr_bicubic']:.2f} | "
            f"{r['val_ssim']:.4f} | {r['val_ssim_bicubic']:.4f} | {signal} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
