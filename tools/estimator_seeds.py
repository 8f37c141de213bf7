"""Held-out gain over the majority baseline per training seed, and its mean and spread, from the eval JSONs that
tools/estimator_measure.sh writes (OUT/eval_select.json, OUT/eval_report.json). "all" pools the two sets'
confusion matrices (the 6 held-out photos; its majority baseline is that of the pooled labels). Ends with the
confusion matrices of the 6 photos summed over the runs given (rows true, columns predicted).

    .venv/bin/python tools/estimator_seeds.py est_out/c32_s0 est_out/c32_s1 est_out/c32_s2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SETS = ("select", "report", "all")


def confusions(run: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """{component: (classes, confusion of select + report)} of one run."""
    parts = [json.loads((run / f"eval_{s}.json").read_text())["components"] for s in ("select", "report")]
    return {c: (e["classes"], sum(np.asarray(p[c]["confusion"]) for p in parts)) for c, e in parts[0].items()}


def scores(run: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """{set: {component: (accuracy %, majority %)}} of one run."""
    parts = {s: json.loads((run / f"eval_{s}.json").read_text()) for s in ("select", "report")}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for s in SETS:
        out[s] = {}
        for comp in parts["select"]["components"]:
            conf = sum(
                np.asarray(parts[p]["components"][comp]["confusion"])
                for p in (("select", "report") if s == "all" else (s,))
            )
            out[s][comp] = (100 * np.trace(conf) / conf.sum(), 100 * conf.sum(1).max() / conf.sum())
    return out


def main(runs: list[str]) -> None:
    table = {r: scores(Path(r)) for r in runs}
    comps = list(next(iter(table.values()))["all"])
    for s in SETS:
        print(f"\n{s}: accuracy % (gain over majority, points)\n")
        print("| component | " + " | ".join(Path(r).name for r in runs) + " | mean gain | spread (sd; min..max) |")
        print("|---" * (len(runs) + 3) + "|")
        for c in comps:
            gains = np.array([table[r][s][c][0] - table[r][s][c][1] for r in runs])
            cells = [f"{table[r][s][c][0]:.1f} ({g:+.1f})" for r, g in zip(runs, gains)]
            sd = gains.std(ddof=1) if len(gains) > 1 else 0.0
            print(
                f"| {c} | "
                + " | ".join(cells)
                + f" | {gains.mean():+.1f} | {sd:.1f}; {gains.min():+.1f}..{gains.max():+.1f} |"
            )

    summed = {c: sum(confusions(Path(r))[c][1] for r in runs) for c in comps}
    for c in comps:
        classes = confusions(Path(runs[0]))[c][0]
        print(f"\n{c}, 6 held-out photos, summed over {len(runs)} run(s): rows true, columns predicted\n")
        print("| true \\ pred | " + " | ".join(classes) + " |")
        print("|---" * (len(classes) + 1) + "|")
        for name, row in zip(classes, summed[c]):
            print(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: estimator_seeds.py RUN [RUN ...]  (folders written by tools/estimator_measure.sh)")
    main(sys.argv[1:])
