"""One estimator's held-out accuracy per photo (the shards' samples grouped by source photo), and what it reads
where the truth is "none": the check behind docs/estimator.md's "what limits it" (a photo's own softness or
grain read as added blur or noise).

    .venv/bin/python tools/estimator_per_photo.py est_out/c32_s0/estimator est_out/heldout/select est_out/heldout/report
"""

from __future__ import annotations

import sys

import numpy as np

from promptsr.estimator import CLASSES, label_row, load_estimator, predict_all
from sr_degrade.shards import open_shards, shard_files


def main(estimator: str, data: list[str]) -> None:
    est = load_estimator(estimator)
    images, labels, photos = [], [], []
    for d in data:
        for s in open_shards(shard_files(d), mode="eval"):
            images.append(s.lr)
            labels.append(label_row(s.meta["bins"]))
            photos.append(s.key.rsplit("_c", 1)[0])  # KEY_cN: crop N of photo KEY
    lab, pred, photos = np.asarray(labels), predict_all(est, images), np.asarray(photos)
    comps = list(CLASSES)
    print("accuracy % (gain over the photo's own majority baseline, points); true none read as none/light/medium/heavy")
    print(
        "\n| photo | samples | " + " | ".join(comps) + " | blur none read as | noise none read as | jpeg none read as |"
    )
    print("|---" * (len(comps) + 5) + "|")
    for photo in dict.fromkeys(photos):
        m = photos == photo
        cells = []
        for i, _ in enumerate(comps):
            acc = 100 * (pred[m, i] == lab[m, i]).mean()
            cells.append(f"{acc:.0f} ({acc - 100 * np.bincount(lab[m, i]).max() / m.sum():+.0f})")
        none = [np.bincount(pred[m & (lab[:, i] == 0), i], minlength=4) for i, c in enumerate(comps) if c != "resize1"]
        print(
            f"| {photo} | {m.sum()} | "
            + " | ".join(cells)
            + " | "
            + " | ".join("/".join(map(str, n)) for n in none)
            + " |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: estimator_per_photo.py ESTIMATOR SHARDS [SHARDS ...]")
    main(sys.argv[1], sys.argv[2:])
