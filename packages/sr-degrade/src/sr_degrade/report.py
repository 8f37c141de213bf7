"""Looking at a build: `inspect_build` (counts, level histograms, common prompts, encoder, sizes)
and `preview_build` (a contact sheet HR | LR | prompt). The folder may be an fsspec URL
(s3://bucket/shards/train, https://host/shards/): its index, build.json and shards are read from there."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from . import storage
from .errors import SrDegradeError, printable
from .progress import plural
from .shards import ShardSample, decode_sample, parquet_rows, tar_samples
from .text import COMPONENTS


def _own_shard(folder: str, name: Any) -> str | None:
    """The shard file an index row names, only when it is a plain file name inside `folder`: an index
    is data, and a crafted one must not make us stat or open paths elsewhere."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return None
    return storage.join(folder, name)


def _first_of(folder: str, whole: str, parts: str) -> list[str]:
    """[folder/whole] when it is there, else the folder's files matching `parts` (a build in parts)."""
    path = storage.join(folder, whole)
    return [path] if storage.exists(path) else storage.listdir(folder, parts)


def _index_rows(folder: str) -> list[dict[str, Any]]:
    indexes = _first_of(folder, "index.parquet", "part*of*-index.parquet")
    if not indexes:
        raise SrDegradeError(f"{storage.shown(folder)}: no index.parquet; is this a build output folder?")
    rows: list[dict[str, Any]] = []
    for path in indexes:
        rows += parquet_rows(path)
    return rows


def _shard_bytes(folder: str, shards: list[str]) -> int:
    present = set(storage.listdir(folder, "*.tar"))
    return sum(storage.size(p) for p in (_own_shard(folder, s) for s in shards) if p in present)


def inspect_build(folder: str | Path, top: int = 10) -> dict[str, Any]:
    """Summary of a build folder (or URL), from its index and build.json (shards are not decoded)."""
    folder = os.fspath(folder)
    rows = _index_rows(folder)
    shards = sorted({str(r["shard"]) for r in rows})
    info_files = _first_of(folder, "build.json", "part*-build.json")
    info = json.loads(storage.read_bytes(info_files[0])) if info_files else {}
    levels = {c: dict(Counter(r[c] for r in rows if r[c] is not None).most_common()) for c in COMPONENTS}
    return {
        "folder": str(folder),
        "status": info.get("status", "?"),
        "source": info.get("source", "?"),
        "samples": len(rows),
        "images": len({r["image"] for r in rows}),
        "shards": len(shards),
        "bytes": _shard_bytes(folder, shards),
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
        f"  {plural(report['samples'], 'sample')} from {plural(report['images'], 'image')} in "
        f"{plural(report['shards'], 'shard')} ({report['bytes'] / 1e6:.1f} MB), {plural(report['errors'], 'error')}",
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
    # Prompts, paths and names come from files: never let them drive the terminal.
    return "\n".join(printable(line) for line in lines)


def _spread_rows(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` index rows spread over the build: one crop of as many different images as possible
    (evenly spaced through the image list, so every shard can show), then second crops, and so on."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["image"], []).append(r)
    chosen: list[dict[str, Any]] = []
    depth = 0
    while len(chosen) < count:
        layer = [g[depth] for g in groups.values() if len(g) > depth]
        if not layer:
            break
        need = count - len(chosen)
        if len(layer) > need:
            layer = [layer[i * len(layer) // need] for i in range(need)]
        chosen += layer
        depth += 1
    return chosen


def _preview_samples(folder: str, count: int) -> list[ShardSample]:
    import webdataset as wds

    chosen = _spread_rows(_index_rows(folder), count)
    wanted = {r["key"] for r in chosen}
    present = set(storage.listdir(folder, "*.tar"))
    shards = []
    for name in dict.fromkeys(r["shard"] for r in chosen):
        path = _own_shard(folder, name)
        if path not in present:
            raise SrDegradeError(
                f"{storage.shown(folder)}: the index names shard {printable(str(name))!r}, which is not in the folder"
            )
        shards.append(path if storage.is_url(path) else os.path.abspath(path))  # a local file opened as a file
    found = {}
    for raw in wds.DataPipeline(wds.SimpleShardList(shards), tar_samples()):
        if raw.get("__key__") in wanted:
            found[raw["__key__"]] = decode_sample(raw)
    return [found[r["key"]] for r in chosen if r["key"] in found]


def preview_build(folder: str | Path, count: int = 8) -> np.ndarray:
    """A contact sheet of `count` samples spread over the build (different images first, from every
    part of it): HR | LR (shown enlarged) | prompt."""
    from .sheet import contact_sheet

    samples = _preview_samples(os.fspath(folder), count)
    if not samples:
        raise SrDegradeError(f"{storage.shown(folder)}: the shards hold no samples")
    rows = [([s.hr, s.lr], f"{s.prompt or '(empty prompt)'}   [{s.key}]") for s in samples]
    return contact_sheet(rows, header=["HR", "LR (shown enlarged)", "prompt"])
