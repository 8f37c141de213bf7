"""What the network predicts, measured: `make ablate-formulation` (after `make demo`, whose shards it reuses).

Trains the demo's recipe (configs/tiny_cpu.yaml: the tiny preset, about 4.5 minutes on 2 cores) once per
formulation, prediction (epsilon, sample, v_prediction) x target (image, residual), changing nothing else,
with training seed 0; exports each and evaluates the demo's held-out photos (coffee, hubble_deep_field:
whole images, the validation shards) from pure noise (strength 1) with 1, 5 and 20 trailing DDIM steps.
The two best formulations (best PSNR-Y over the step counts) are trained again with seeds 1 and 2. Prints
a markdown table (mean PSNR-Y / SSIM-Y; for the two best, the mean over 3 seeds and the range) and writes
it to OUT/formulation/table.md. About 50 minutes on 2 cores.

Then the loss weighting and the schedule's end, on top of the best formulation (and zero terminal SNR also
on v_prediction / residual, where its authors use it): min-SNR-gamma weighting (diffusion.snr_gamma=5) and
diffusers' zero-terminal-SNR rescaling (diffusion.zero_terminal_snr=true), seed 0, written to
OUT/formulation/variants.md (about 25 minutes more; --no-variants skips them).

    python tools/formulation.py --out demo_out [--steps 1 5 20] [--seeds 0 1 2] [--reuse-models] [--no-variants]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
PREDICTIONS = ("epsilon", "sample", "v_prediction")
TARGETS = ("image", "residual")


def run(*args: object) -> None:
    subprocess.run([str(a) for a in args], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


#: Changes measured on top of a formulation: (folder suffix, config overrides, label).
VARIANTS = (
    ("snr5", ("diffusion.snr_gamma=5",), "min-SNR-gamma 5"),
    ("ztsnr", ("diffusion.zero_terminal_snr=true",), "zero terminal SNR"),
)


def trained(
    out: Path, prediction: str, target: str, seed: int, reuse: bool, variant: tuple[str, tuple[str, ...]] = ("", ())
) -> tuple[Path, float]:
    """The exported model of one formulation and seed (with a variant's overrides), and its training seconds
    (nan when reused)."""
    suffix, overrides = variant
    folder = out / "formulation" / f"{prediction}_{target}_seed{seed}{'_' + suffix if suffix else ''}"
    model = folder / "model"
    if reuse and (model / "promptsr.json").exists():
        return model, float("nan")
    start = time.perf_counter()
    run(BIN / "promptsr", "train", "-c", "configs/tiny_cpu.yaml", f"data.train={out}/shards/train",
        f"data.val={out}/shards/val", f"run.output_dir={folder}/run", f"run.seed={seed}", "run.resume=null",
        f"diffusion.prediction={prediction}", f"diffusion.target={target}", *overrides)  # fmt: skip
    seconds = time.perf_counter() - start
    run(BIN / "promptsr", "export", folder / "run", "-o", model)
    return model, seconds


def scores(out: Path, model: Path, steps: int, reuse: bool) -> dict[str, dict[str, float]]:
    """Mean PSNR-Y / SSIM-Y of the model and of bicubic on the held-out photos, `steps` DDIM steps from noise
    (with `reuse`, an evaluation already written next to a reused model is read, not run again)."""
    ev = model.parent / f"eval_{steps}"
    if not (reuse and (ev / "summary.json").exists()):
        run(BIN / "promptsr", "eval", "--model", model, "--data", f"{out}/shards/val", "--metrics", "psnr,ssim",
            "--steps", steps, "--strength", 1, "--seed", 0, "--no-grids", "--no-save-images", "--out", ev)  # fmt: skip
    return json.loads((ev / "summary.json").read_text())["datasets"]["val"]["means"]


def cell(values: list[dict[str, float]]) -> str:
    ps, ss = [v["psnr"] for v in values], [v["ssim"] for v in values]
    text = f"{sum(ps) / len(ps):.2f} / {sum(ss) / len(ss):.3f}"
    return text + (f" ({min(ps):.2f}..{max(ps):.2f})" if len(values) > 1 else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the two best formulations")
    ap.add_argument(
        "--reuse-models",
        action="store_true",
        help="skip training where a model folder exists, and evaluating where its evaluation exists",
    )
    ap.add_argument("--no-variants", action="store_true", help="skip min-SNR-gamma and zero terminal SNR")
    args = ap.parse_args()
    out = args.out
    if not (out / "shards" / "train").exists() or not (out / "shards" / "val").exists():
        print(f"error: {out}/shards/train and {out}/shards/val not found: run make demo first", file=sys.stderr)
        return 2
    first, *more = args.seeds
    results: dict[tuple[str, str], dict[int, dict[int, dict[str, float]]]] = {}
    seconds: list[float] = []
    bicubic: dict[str, float] = {}
    for prediction in PREDICTIONS:
        for target in TARGETS:
            model, s = trained(out, prediction, target, first, args.reuse_models)
            seconds.append(s)
            results[(prediction, target)] = {first: {}}
            for steps in args.steps:
                m = scores(out, model, steps, args.reuse_models)
                results[(prediction, target)][first][steps] = m["promptsr"]
                bicubic = m["bicubic"]
    ranked = sorted(results, key=lambda f: -max(v["psnr"] for v in results[f][first].values()))
    for f in ranked[:2]:
        for seed in more:
            model, s = trained(out, *f, seed, args.reuse_models)
            seconds.append(s)
            results[f][seed] = {steps: scores(out, model, steps, args.reuse_models)["promptsr"] for steps in args.steps}
    timed = [s for s in seconds if s == s]
    lines = [
        "Held-out coffee + hubble_deep_field (whole images), mean PSNR-Y / SSIM-Y, DDIM from pure noise (strength 1, "
        "trailing steps, sampling seed 0); configs/tiny_cpu.yaml changing only diffusion.prediction / target; "
        f"training seed {first}, and for the two best seeds {', '.join(map(str, args.seeds))} (mean, PSNR-Y range). "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
        + (f", {sum(timed) / len(timed):.0f} s of training each" if timed else "")
        + f", {time.strftime('%Y-%m-%d')}.",
        "",
        "| prediction / target | " + " | ".join(f"{s} step{'s' * (s > 1)}" for s in args.steps) + " |",
        "|---|" + "---|" * len(args.steps),
    ]
    for f in ranked:
        row = [cell([results[f][seed][s] for seed in results[f]]) for s in args.steps]
        lines.append(f"| {f[0]} / {f[1]}{' (3 seeds)' if len(results[f]) > 1 else ''} | " + " | ".join(row) + " |")
    lines.append(f"| bicubic | {bicubic['psnr']:.2f} / {bicubic['ssim']:.3f} |" + " |" * (len(args.steps) - 1))
    text = "\n".join(lines) + "\n"
    (out / "formulation").mkdir(parents=True, exist_ok=True)
    (out / "formulation" / "table.md").write_text(text)
    print(text)
    if not args.no_variants:
        variants(out, ranked[0], results, bicubic, args)
    return 0


def variants(out: Path, best: tuple[str, str], results: dict, bicubic: dict[str, float], args) -> None:
    """min-SNR-gamma and zero terminal SNR on the best formulation (and zero terminal SNR on v / residual),
    seed 0 against the same formulation's seed 0; OUT/formulation/variants.md."""
    first = args.seeds[0]
    runs = [(best, v) for v in VARIANTS]
    if best != ("v_prediction", "residual"):
        runs.append((("v_prediction", "residual"), VARIANTS[1]))
    lines = [
        f"On top of a formulation (configs/tiny_cpu.yaml, training seed {first}), held-out coffee + "
        "hubble_deep_field, mean PSNR-Y / SSIM-Y from pure noise, trailing DDIM; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}.",
        "",
        "| formulation | change | " + " | ".join(f"{s} step{'s' * (s > 1)}" for s in args.steps) + " |",
        "|---|---|" + "---|" * len(args.steps),
    ]
    for f in dict.fromkeys(f for f, _ in runs):
        row = [cell([results[f][first][s]]) for s in args.steps]
        lines.append(f"| {f[0]} / {f[1]} | none | " + " | ".join(row) + " |")
    for f, (suffix, overrides, label) in runs:
        model, _ = trained(out, *f, first, args.reuse_models, (suffix, overrides))
        row = [cell([scores(out, model, s, args.reuse_models)["promptsr"]]) for s in args.steps]
        lines.append(f"| {f[0]} / {f[1]} | {label} | " + " | ".join(row) + " |")
    lines.append(f"| bicubic | | {bicubic['psnr']:.2f} / {bicubic['ssim']:.3f} |" + " |" * (len(args.steps) - 1))
    text = "\n".join(lines) + "\n"
    (out / "formulation" / "variants.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
