"""Looking at a build: `inspect_build` (counts, level histograms, common prompts, encoder, sizes)
and `preview_build` (a contact sheet HR | LR | prompt)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SrDegradeError
from .shards import ShardSample, decode_sample, shard_files
from .text import COMPONENTS


def _index_rows(folder: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    indexes = [folder / "index.parquet"] if (folder / "index.parquet").exists() else []
    indexes = indexes or sorted(folder.glob("part*of*-index.parquet"))
    if not indexes:
        raise SrDegradeError(f"{folder}: no index.parquet; is this a build output folder?")
    rows: list[dict[str, Any]] = []
    for path in indexes:
        rows += pq.read_table(path).to_pylist()
    return rows


def inspect_build(folder: str | Path, top: int = 10) -> dict[str, Any]:
    """Summary of a build folder, from its index and build.json (shards are not decoded)."""
    folder = Path(folder)
    rows = _index_rows(folder)
    shards = sorted({r["shard"] for r in rows})
    info_files = (
        [folder / "build.json"] if (folder / "build.json").exists() else sorted(folder.glob("part*-build.json"))
    )
    info = json.loads(info_files[0].read_text()) if info_files else {}
    levels = {c: dict(Counter(r[c] for r in rows if r[c] is not None).most_common()) for c in COMPONENTS}
    return {
        "folder": str(folder),
        "status": info.get("status", "?"),
        "source": info.get("source", "?"),
        "samples": len(rows),
        "images": len({r["image"] for r in rows}),
        "shards": len(shards),
        "bytes": sum((folder / s).stat().st_size for s in shards if (folder / s).exists()),
        "errors": info.get("errors", 0),
        "encoder": info.get("encoder"),
        "hr_sizes": dict(Counter(f"{r['crop_w']}x{r['crop_h']}" for r in rows).most_common(top)),
        "lr_sizes": dict(Counter(f"{r['lr_w']}x{r['lr_h']}" for r in rows).most_common(top)),
        "levels": levels,
        "prompts": Counter(r["prompt"] for r in rows).most_common(top),
        "emb_len": dict(Counter(r["emb_len"] for r in rows if r["emb_len"] is not None).most_common(top)),
    }


def format_inspection(report: dict[str, Any]) -> str:
    n = max(report["samples"], 1)
    enc = report["encoder"]
    lines = [
        f"{report['folder']}: {report['status']} build of {report['source']}",
        f"  {report['samples']} samples from {report['images']} images in {report['shards']} shards "
        f"({report['bytes'] / 1e6:.1f} MB), {report['errors']} errors",
        f"  encoder: {enc['id']} (D={enc['dim']}, {enc['dtype']})" if enc else "  encoder: none (--no-embed)",
        f"  HR sizes: {report['hr_sizes']}",
        f"  LR sizes: {report['lr_sizes']}",
    ]
    if report["emb_len"]:
        lines.append(f"  embedding lengths L: {report['emb_len']}")
    lines.append("  levels:")
    for component, counts in report["levels"].items():
        shares = ", ".join(f"{lvl} {k} ({100 * k / n:.0f}%)" for lvl, k in counts.items())
        lines.append(f"    {component:<8} {shares or '-'}")
    lines.append("  most common prompts:")
    for prompt, k in report["prompts"]:
        lines.append(f"    {k:>6}  {prompt or '(empty)'}")
    return "\n".join(lines)


def _first_samples(folder: Path, count: int) -> list[ShardSample]:
    import webdataset as wds

    out = []
    for raw in wds.DataPipeline(wds.SimpleShardList(shard_files(folder)), wds.tarfile_to_samples()):
        out.append(decode_sample(raw))
        if len(out) >= count:
            break
    return out


def preview_build(folder: str | Path, count: int = 8) -> np.ndarray:
    """A contact sheet of the first `count` samples: HR | LR (shown enlarged) | prompt."""
    from .sheet import contact_sheet

    samples = _first_samples(Path(folder), count)
    if not samples:
        raise SrDegradeError(f"{folder}: the shards hold no samples")
    rows = [([s.hr, s.lr], f"{s.prompt or '(empty prompt)'}   [{s.key}]") for s in samples]
    return contact_sheet(rows, header=["HR", "LR (shown enlarged)", "prompt"])
