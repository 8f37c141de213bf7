"""The demo's spread over training seeds: `make demo-seeds` (after `make demo`, whose shards it reuses).

For each seed, trains configs/tiny_cpu.yaml exactly as `make demo` does (run.seed = SEED), exports it,
and evaluates the held-out photos (whole images, the demo's LR/HR pairs: the validation shards) with
the demo's sampling, without and with the wavelet colour fix. Prints one row per seed and the
spread, and writes OUT/seeds/table.md. Seed 0 reuses OUT/model_tiny when --reuse-demo is given.

    python tools/demo_seeds.py --out demo_out --steps 20 --strength 0.4 [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(*args: str) -> None:
    subprocess.run([str(a) for a in args], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def secs(value: float) -> str:
    """Training seconds, or "-" for a model that was reused rather than trained here."""
    return "-" if math.isnan(value) else f"{value:.0f}"


def means(folder: Path) -> dict[str, dict[str, float]]:
    return json.loads((folder / "summary.json").read_text())["datasets"]["val"]["means"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--reuse-demo", action="store_true", help="seed 0 is OUT/model_tiny (make demo's)")
    ap.add_argument("--reuse-models", action="store_true", help="skip training where a seed's model folder exists")
    args = ap.parse_args()
    out = args.out
    if not (out / "shards" / "train").exists():
        print(f"error: {out}/shards/train not found: run make demo first", file=sys.stderr)
        return 2
    rows = []
    for seed in args.seeds:
        folder = out / "seeds" / f"seed{seed}"
        model = folder / "model"
        train_s = float("nan")
        if seed == 0 and args.reuse_demo and (out / "model_tiny").exists():
            model = out / "model_tiny"
        elif args.reuse_models and (model / "promptsr.json").exists():
            pass
        else:
            start = time.perf_counter()
            run(BIN / "promptsr", "train", "-c", "configs/tiny_cpu.yaml", f"data.train={out}/shards/train",
                f"data.val={out}/shards/val", f"run.output_dir={folder}/run", f"run.seed={seed}",
                "run.resume=null")  # fmt: skip
            train_s = time.perf_counter() - start
            run(BIN / "promptsr", "export", folder / "run", "-o", model)
        row = {"seed": seed, "train_s": train_s}
        for color in ("none", "wavelet"):
            ev = folder / f"eval_{color}"
            run(BIN / "promptsr", "eval", "--model", model, "--data", f"{out}/shards/val", "--metrics", "psnr,ssim",
                "--steps", str(args.steps), "--strength", str(args.strength), "--color-fix", color, "--no-grids",
                "--no-save-images", "--out", ev)  # fmt: skip
            m = means(ev)
            row[color] = m["promptsr"]
            row["bicubic"] = m["bicubic"]
        rows.append(row)
    lines = [
        "Held-out photos (coffee, hubble_deep_field; whole images), "
        f"DDIM {args.steps} steps, strength {args.strength}, sampling seed 0",
        "",
        "| training seed | train s | PSNR-Y | SSIM-Y | PSNR-Y (wavelet fix) | SSIM-Y (wavelet fix) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {secs(r['train_s'])} | {r['none']['psnr']:.2f} | {r['none']['ssim']:.4f} | "
            f"{r['wavelet']['psnr']:.2f} | {r['wavelet']['ssim']:.4f} |"
        )
    b = rows[0]["bicubic"]
    lines.append(f"| bicubic | | {b['psnr']:.2f} | {b['ssim']:.4f} | | |")
    for color in ("none", "wavelet"):
        ps = [r[color]["psnr"] for r in rows]
        ss = [r[color]["ssim"] for r in rows]
        dp = [p - b["psnr"] for p in ps]
        ds = [s - b["ssim"] for s in ss]
        lines.append(
            f"\n{color}: PSNR-Y {min(ps):.2f}..{max(ps):.2f} (vs bicubic {min(dp):+.2f}..{max(dp):+.2f} dB), "
            f"SSIM-Y {min(ss):.4f}..{max(ss):.4f} (vs bicubic {min(ds):+.4f}..{max(ds):+.4f})"
        )
    text = "\n".join(lines) + "\n"
    (out / "seeds").mkdir(parents=True, exist_ok=True)
    (out / "seeds" / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
