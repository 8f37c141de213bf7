"""The one table of bench/gpu_check.sh: every stage's figures from $OUT/*.json beside issue 9's goals.

python bench/gpu_table.py gpu_out
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(folder: Path, name: str):
    path = folder / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def first(rows, prefix: str) -> dict | None:
    return next((r for r in rows or [] if str(r.get("case", "")).startswith(prefix)), None)


def main(folder: Path) -> None:
    anchor = (load(folder, "paper_dn_anchor.json") or {}).get("rows", {})
    a_train = next((v for k, v in anchor.items() if k.startswith("paperDN train")), {})
    a_ddim = next((v for k, v in anchor.items() if k.startswith("paperDN ddim")), {})
    ref = a_train.get("samples_per_s")
    lines = ["| check | figure | goal | verdict |", "|---|---|---|---|"]

    def row(check: str, figure: str, goal: str, ok: bool | None) -> None:
        lines.append(f"| {check} | {figure} | {goal} | {'' if ok is None else ('met' if ok else 'NOT met')} |")

    if ref:
        row("reference (paper_dn_anchor) training", f"{ref:.1f} samples/s, {a_train['peak_GiB']:.1f} GiB", "", None)
    else:
        row("reference (paper_dn_anchor) training", "missing (see anchor.log)", "", None)
    if a_ddim:
        row("reference DDIM-50 512^2", f"{a_ddim['image_s']:.2f} s", "", None)
    for name, label in (("train_eager.json", "eager"), ("train_compiled.json", "default settings")):
        rows = load(folder, name)
        if not rows:
            row(f"PromptSR training ({label})", f"missing (see {name[:-5]}.log)", ">= 2x reference, <= 24 GiB", False)
            continue
        r = rows[0]
        sps, mem = r["samples_per_s"], r["peak_gib"]
        ratio = f", {sps / ref:.2f}x reference" if ref else ""
        ok = (sps >= 2 * ref if ref else sps >= 150) and mem <= 24
        row(
            f"PromptSR training ({label}: {r['speed']})",
            f"{sps:.1f} samples/s{ratio}, {mem:.1f} GiB",
            ">= 2x reference (>= 150/s), <= 24 GiB",
            ok,
        )
    resumed = load(folder, "resume.json")
    row(
        "GPU checkpoint, resume, 5 more steps (EMA on the device)",
        "ok" if resumed else "failed (see resume.log)",
        "completes",
        bool(resumed),
    )
    infer = load(folder, "infer.json")
    for name, label in (("infer", "eager"), ("infer_compiled", "inductor")):
        rows = load(folder, f"{name}.json")
        for prefix, goal, limit in (("ddim 50", "<= 0.6 s", 0.6), ("dpm-solver++ 20", "<= 0.25 s", 0.25)):
            r = first(rows, prefix)
            if r is None or "seconds" not in r:
                row(f"{prefix} steps through Upscaler ({label})", f"missing (see {name}.log)", goal, False)
            else:
                row(f"{r['case']} (Upscaler, {label})", f"{r['seconds']:.3f} s", goal, r["seconds"] <= limit)
    r = first(infer, "tiled 2048")
    if r is None or r.get("device_peak_gib") is None:
        row("tiled 2048^2 device memory", "missing (see infer.log)", "<= 8 GiB", False)
    else:
        row(
            r["case"],
            f"{r['device_peak_gib']:.2f} GiB device, {r['host_peak_gib']:.2f} GiB host",
            "<= 8 GiB",
            r["device_peak_gib"] <= 8,
        )
    found = (folder / "gpu.txt").read_text().strip().splitlines() if (folder / "gpu.txt").exists() else []
    gpu = found[-1] if found else "none (a CPU check of the script)"
    print(f"GPU: {gpu}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_out"))
