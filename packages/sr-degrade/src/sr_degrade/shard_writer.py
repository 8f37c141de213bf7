"""The builder's output side: the output folder (a local folder or any fsspec URL), the names of a build's
files in it, numbered shards written whole, and the index and build.json.

A shard only ever appears complete under its final name, so a reader (or `--resume`) never sees half of
one: locally it is written as `NAME.tar.tmp`, flushed to disk and renamed; at a URL it is staged in a
local temporary file and uploaded once complete (an object store shows an object only when its upload
finishes). Tar members carry fixed times, owner and mode (`shards.TAR_*`), so the bytes depend on the
samples alone. Both build engines (worker processes here, Ray tasks in `ray_build`) write through this
module, which is why their shards are the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import storage
from .shards import TAR_MODE, TAR_MTIME, TAR_USER


class Output:
    """The output folder of a build: a local folder, or an fsspec URL (s3://bucket/shards/, ...) through
    `storage`; the few file operations a build needs, by file name."""

    def __init__(self, where: str | os.PathLike):
        text = os.fspath(where)
        self.remote = storage.is_url(text)
        self.where: str | Path = text.rstrip("/") if self.remote else Path(text)

    def __str__(self) -> str:
        return str(self.where)

    def path(self, name: str) -> str:
        return storage.join(str(self.where), name) if self.remote else str(Path(self.where) / name)

    def exists(self, name: str) -> bool:
        return storage.exists(self.path(name)) if self.remote else (Path(self.where) / name).exists()

    def names(self, pattern: str) -> list[str]:
        """Sorted names of the files matching a glob `pattern` (none when the folder does not exist)."""
        if self.remote:
            return sorted(url.rstrip("/").rsplit("/", 1)[-1] for url in storage.listdir(str(self.where), pattern))
        folder = Path(self.where)
        return sorted(p.name for p in folder.glob(pattern)) if folder.is_dir() else []

    def unlink(self, name: str) -> None:
        if self.remote:
            storage.remove(self.path(name), missing_ok=True)
        else:
            (Path(self.where) / name).unlink(missing_ok=True)

    def read_bytes(self, name: str) -> bytes:
        return storage.read_bytes(self.path(name)) if self.remote else (Path(self.where) / name).read_bytes()

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace `name` whole: a temporary file renamed into place, or one upload."""
        if self.remote:
            storage.write_bytes(self.path(name), data)
            return
        path = Path(self.where) / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    @contextlib.contextmanager
    def open_read(self, name: str):
        if self.remote:
            with storage.open_read(self.path(name)) as f:
                yield f
        else:
            with open(Path(self.where) / name, "rb") as f:
                yield f

    def mkdir(self) -> None:
        if not self.remote:
            Path(self.where).mkdir(parents=True, exist_ok=True)


@dataclass
class ShardNames:
    """File names of one build (or one part of a split build) inside the output folder."""

    out: Output
    prefix: str  # "" or "part0of2-"
    split: str

    def shard(self, k: int) -> str:
        return f"{self.prefix}{self.split}-{k:06d}.tar"

    @property
    def index(self) -> str:
        return f"{self.prefix}index.parquet"

    @property
    def build_json(self) -> str:
        return f"{self.prefix}build.json"

    @property
    def errors(self) -> str:
        return f"{self.prefix}errors.jsonl"

    @property
    def shard_pattern(self) -> str:
        return f"{self.prefix}{self.split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"

    @property
    def lock(self) -> Path:
        """Held while a process builds these files in a local folder (hidden, never one of the build's files)."""
        return Path(self.out.where) / f".{self.prefix}{self.split}.lock"

    def own_files(self) -> list[str]:
        mine = [n for n in (self.index, self.build_json, self.errors) if self.out.exists(n)]
        return mine + self.out.names(self.shard_pattern) + self.out.names(self.shard_pattern + ".tmp")


class _DroppableFile:
    """A file whose writes can be switched off: after a failed write (a full disk), the tar
    stream's own clean-up must not write into, or complain about, the abandoned file."""

    def __init__(self, path: Path):
        self._file = open(path, "wb")  # closed in close()
        self.dropped = False

    def write(self, data: bytes) -> int:
        return len(data) if self.dropped else self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        if not self.dropped:
            self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def drop(self) -> None:
        self.dropped = True
        with contextlib.suppress(OSError):
            self._file.close()


class ShardFile:
    """One shard being written, visible under its final name only once `commit` has run."""

    def __init__(self, out: Output, name: str):
        self.out, self.name = out, name
        if out.remote:
            fd, tmp = tempfile.mkstemp(prefix="sr-degrade-", suffix=".tar")
            os.close(fd)
            self.tmp = Path(tmp)
        else:
            self.tmp = Path(out.where) / (name + ".tmp")
        self.file = _DroppableFile(self.tmp)
        import webdataset as wds

        self.tar = wds.TarWriter(
            self.file, user=TAR_USER, group=TAR_USER, mode=TAR_MODE, encoder=False, mtime=TAR_MTIME
        )

    def write(self, members: dict[str, Any]) -> None:
        self.tar.write(members)

    def commit(self) -> int:
        """Complete the shard (flushed to disk, then renamed, or uploaded); its size in bytes."""
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        size = self.tmp.stat().st_size
        if self.out.remote:
            try:
                with open(self.tmp, "rb") as src, storage.open_write(self.out.path(self.name)) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            finally:
                self.tmp.unlink(missing_ok=True)
        else:
            os.replace(self.tmp, Path(self.out.where) / self.name)
        return size

    def drop(self) -> None:
        self.file.drop()
        self.tmp.unlink(missing_ok=True)


class ShardSink:
    """Writes samples into numbered shards k, k + 1, ... of `shard_size` samples each."""

    def __init__(self, names: ShardNames, shard_size: int, first: int):
        self.names, self.size, self.k = names, shard_size, first
        self.count = 0
        self.bytes = 0
        self._open: ShardFile | None = None

    def add(self, members: dict[str, bytes | str]) -> str:
        """Write one sample; the name of the shard it went into."""
        if self._open is None:
            self._open = ShardFile(self.names.out, self.names.shard(self.k))
        self._open.write(members)
        self.count += 1
        name = self._open.name
        if self.count == self.size:
            self.finish()
        return name

    def finish(self) -> None:
        """Complete the open shard (if any)."""
        if self._open is None:
            return
        self.bytes += self._open.commit()
        self._open = None
        self.k += 1
        self.count = 0

    def abort(self) -> None:
        """Drop the open, incomplete shard."""
        if self._open is not None:
            self._open.drop()
        self._open = None


def shard_rows(stream: IO[bytes], name: str, members: set[str]) -> list[dict[str, Any]]:
    """Index rows rebuilt from the json members of one shard read as a stream (for --resume); ValueError
    when a sample lacks one of `members` or holds others (a shard cut short, or not this build's)."""
    rows = []
    have: dict[str, set[str]] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            have.setdefault(key, set()).add(ext)
            if ext == "json":
                meta = json.loads(tar.extractfile(member).read())
                rows.append(index_row(key, name, meta))
    for key, exts in have.items():
        if exts != members:
            raise ValueError(f"sample {key} holds {sorted(exts)}, expected {sorted(members)}")
    return rows


def index_row(key: str, shard: str, meta: dict[str, Any]) -> dict[str, Any]:
    """One row of index.parquet: a sample's key, shard, crop, prompt, levels and parameters."""
    levels = meta["bins"]
    x, y, w, h = meta["crop"]
    enc = meta.get("encoder") or {}
    return {
        "key": key,
        "shard": shard,
        "image": meta["image"],
        "crop_index": meta["seeds"]["crop_index"],
        "crop_x": x,
        "crop_y": y,
        "crop_w": w,
        "crop_h": h,
        "lr_w": meta["lr_size"][0],
        "lr_h": meta["lr_size"][1],
        "prompt": meta["prompt"],
        "prompt_format": meta["prompt_format"],
        "order": ",".join(meta["params"]["order"]),
        **{c: levels.get(c) for c in ("blur", "resize1", "noise", "jpeg", "resize2")},
        "params": json.dumps(meta["params"], sort_keys=True),
        "emb_len": enc.get("L"),
    }


def index_bytes(rows: list[dict[str, Any]]) -> bytes:
    """index.parquet's bytes for `rows` (a fixed schema, so that an empty build has one too)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    i32, text = pa.int32(), pa.string()
    columns = [("key", text), ("shard", text), ("image", text)]
    columns += [(c, i32) for c in ("crop_index", "crop_x", "crop_y", "crop_w", "crop_h", "lr_w", "lr_h")]
    columns += [(c, text) for c in ("prompt", "prompt_format", "order", "blur", "resize1", "noise", "jpeg")]
    columns += [("resize2", text), ("params", text), ("emb_len", i32)]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(columns)), buf)
    return buf.getvalue()


def write_index(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write index.parquet at `path` (a local path or a URL), replacing it whole."""
    path = os.fspath(path)
    folder, name = path.rstrip("/").rsplit("/", 1) if storage.is_url(path) else os.path.split(path)
    Output(folder or ".").write_bytes(name, index_bytes(rows))


def json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
