"""The shard format (DESIGN.md section 5): writing one sample's members, and reading shards back.

One sample = five tar members sharing a key (the sanitised source-relative path plus the crop
index, e.g. `HR_train_0001000_0000001_png_c0`):

| member | content |
|---|---|
| `hr.png` | uint8 RGB HR crop |
| `lr.png` | uint8 RGB LR, exactly HR / scale |
| `txt` | the prompt (UTF-8) |
| `emb.npy` | float16 [L, D] final hidden states of every token of the prompt, no padding (absent with --no-embed) |
| `json` | schema, source, image, crop box, seeds, exact op parameters, bins, prompt format, encoder, L, D |

`open_shards` reads them back as typed `ShardSample`s through a webdataset pipeline; `collate`
pads the embeddings of a batch and returns the attention mask (True = attend). Decoding is ours:
only these members are decoded, and never with pickle.

Shards, their index.parquet and build.json may live in object storage: any fsspec URL
(`s3://bucket/shards/`, `gs://...`, `http(s)://...`) is listed and streamed through
`sr_degrade.storage` (webdataset's own opener has no s3 handler); `pipe:` commands and local files
are opened by webdataset as before.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import storage
from .errors import SrDegradeError, printable
from .imageio import decode_image
from .params import DegradationParams

SCHEMA_VERSION = 1
#: Tar member metadata fixed so that shards are byte-identical across runs and machines.
TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z
TAR_USER = "promptsr"
TAR_MODE = 0o444

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def key_stem(image_key: str) -> str:
    """The source-relative path with every character outside [A-Za-z0-9_-] replaced by "_"
    (webdataset splits keys at the first dot)."""
    return _UNSAFE.sub("_", image_key)


def text_key(image_key: str) -> str:
    """The image key as valid UTF-8 text (for JSON members, the index and logs): the key itself,
    except that bytes of a file name that is not UTF-8 (surrogate escapes) are written as \\xNN."""
    try:
        image_key.encode("utf-8")
        return image_key
    except UnicodeEncodeError:
        return image_key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def sample_key(image_key: str, crop_index: int) -> str:
    """Shard key of one sample: `key_stem` of its image plus "_c<crop>"."""
    return f"{key_stem(image_key)}_c{crop_index}"


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes, where: str = "emb.npy") -> np.ndarray:
    """A .npy payload as an array; never unpickles. SrDegradeError naming `where` when it is not a
    plain numeric .npy (an object array, a truncated or foreign file)."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        reason = "an object array (refused: it would need pickle)" if "allow_pickle" in str(e) else str(e)
        raise SrDegradeError(f"{where}: not a numeric .npy array: {reason}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise SrDegradeError(f"{where}: expected a numeric array, got dtype {getattr(array, 'dtype', '?')}")
    return array


def encode_json(record: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no spaces): the same record always gives the same bytes."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class ShardSample:
    """One decoded sample. Images are H x W x 3 uint8 RGB; `emb` is float16 [L, D] or None."""

    key: str
    hr: np.ndarray
    lr: np.ndarray
    prompt: str
    params: DegradationParams
    meta: dict[str, Any]
    emb: np.ndarray | None

    @property
    def scale(self) -> int:
        return self.params.scale


def decode_sample(raw: dict[str, Any]) -> ShardSample:
    """A webdataset sample dict (member name -> bytes) -> ShardSample.

    Every member is untrusted: a malformed one raises SrDegradeError naming the shard, the sample
    and the member, never a bare ValueError.
    """
    key = raw.get("__key__", "?")
    where = f"{printable(str(raw.get('__url__', '?')))} sample {printable(str(key))}"
    member = "json"
    try:
        meta = json.loads(raw["json"])
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
        member = "txt"
        prompt = raw["txt"].decode("utf-8")
        member = "params"
        params = DegradationParams.from_dict(meta["params"])
        emb = None
        if "emb.npy" in raw:
            emb = decode_npy(raw["emb.npy"], f"{where} emb.npy")
            if emb.ndim != 2:
                raise SrDegradeError(f"{where} emb.npy: expected a [L, D] array, got shape {emb.shape}")
        return ShardSample(
            key=key,
            hr=decode_image(raw["hr.png"], f"{where} hr.png"),
            lr=decode_image(raw["lr.png"], f"{where} lr.png"),
            prompt=prompt,
            params=params,
            meta=meta,
            emb=emb,
        )
    except KeyError as e:
        raise SrDegradeError(f"{where}: member {e} missing; not a PromptSR shard?") from None
    except SrDegradeError as e:
        if where in str(e):
            raise
        raise SrDegradeError(f"{where} {member}: {e}") from None
    except (ValueError, TypeError, AttributeError) as e:
        raise SrDegradeError(f"{where} {member}: malformed ({e})") from None


#: URL schemes webdataset opens by itself (a command, a download); see `shard_files`. Those fsspec
#: also knows (http(s), gs, hf, sftp) are opened through `sr_degrade.storage` instead.
URL_SCHEMES = ("pipe", "http", "https", "sftp", "ftps", "scp", "gs", "ais", "htgs", "hf")


def _url_scheme(text: str) -> str | None:
    """The scheme of `text` when it is a URL webdataset would open as one, else None (a local path)."""
    from urllib.parse import urlparse

    scheme = urlparse(text).scheme.lower()
    return scheme if scheme in URL_SCHEMES or scheme == "file" else None


def shard_files(pattern: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths from a folder (its *.tar, sorted), a glob, a brace pattern, or a list.

    Local files come back as absolute paths, which webdataset always opens as plain files: a file
    found by a folder or a glob is never taken for a command or a download, whatever its name (a
    file called `pipe:CMD;.tar` is a file). URLs (`pipe:...`, `http(s)://...`; `file://` is a local
    path) are used as URLs only when the pattern itself is one, as the user typed it: a brace
    pattern of a URL is expanded as text, never globbed, e.g.
    `pipe:aws s3 cp s3://bucket/train-{000000..000099}.tar -` streams from object storage.
    An fsspec URL (`storage.is_url`: s3://, gs://, http(s)://, ...) may also name a folder, listed
    for its *.tar (`s3://bucket/shards/`), or a glob in its last part (`s3://bucket/shards/train-*.tar`).
    """
    if isinstance(pattern, (list, tuple)):
        return [_as_shard(p) for p in pattern]
    text = str(pattern)
    if storage.is_url(pattern):
        found = _url_shards(text)
        if not found:
            raise SrDegradeError(
                f"no shards found at {storage.shown(text)} (a folder of .tar files, a glob or a brace pattern)"
            )
        return found
    scheme = _url_scheme(text)
    if scheme == "file":
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        text, scheme = url2pathname(urlparse(text).path), None
    if scheme is not None:
        found = _braces(text)
    elif os.path.isdir(text):
        found = sorted(glob.glob(os.path.join(glob.escape(text), "*.tar")))
    elif "{" in text:
        found = [os.path.abspath(p) for p in _braces(text)]
    else:
        found = sorted(glob.glob(text))
    if not found:
        raise SrDegradeError(
            f"no shards found at {printable(text)!r} (a folder of .tar files, a glob or a brace pattern)"
        )
    return found if scheme is not None else [os.path.abspath(p) for p in found]


def _url_shards(url: str) -> list[str]:
    """The shards an fsspec URL names: a brace pattern expanded as text, one .tar object, a glob in the
    last part (not for http(s), whose URLs may hold a query), else a folder listed for its *.tar."""
    web = url.lower().startswith(("http://", "https://"))
    if "{" in url:
        return _braces(url)
    if url.lower().endswith(".tar") and (web or not any(c in url for c in "*?[")):
        return [url]
    folder, _, last = url.rstrip("/").rpartition("/")
    if not web and any(c in last for c in "*?["):
        return storage.listdir(folder, last)
    return storage.listdir(url, "*.tar")


def _braces(text: str) -> list[str]:
    import braceexpand

    return list(braceexpand.braceexpand(text))


def _as_shard(path: str | os.PathLike) -> str:
    """One entry of an explicit list: a URL stays a URL (the user wrote it), a path becomes absolute."""
    if storage.is_url(path):
        return str(path)
    text = str(path)
    scheme = _url_scheme(text)
    if scheme == "file":
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return os.path.abspath(url2pathname(urlparse(text).path))
    return text if scheme is not None else os.path.abspath(text)


def _through_fsspec(url: str) -> bool:
    """Whether `url` is streamed through `storage` (an fsspec URL; http(s) only where aiohttp, which
    fsspec's http needs, is installed: without it webdataset's curl opener reads it, as it always did)."""
    if not storage.is_url(url):
        return False
    if url.lower().startswith(("http://", "https://")):
        import importlib.util

        return importlib.util.find_spec("aiohttp") is not None
    return True


def _open_streams(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pipeline stage: dict(url=...) -> dict(url=..., stream=...), each stream closed once its tar is read.

    fsspec URLs through `storage.open_read`; local files and webdataset's own URLs (pipe:, ...) through
    webdataset's gopen, as `wds.tarfile_to_samples` opens them.
    """
    from webdataset.gopen import gopen

    for sample in src:
        url = sample["url"]
        stream = storage.open_read(url) if _through_fsspec(url) else gopen(url)
        try:
            yield {**sample, "stream": stream}
        finally:
            stream.close()


def _tar_samples(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    from webdataset.tariterators import group_by_keys, tar_file_expander

    try:
        yield from group_by_keys(tar_file_expander(_open_streams(src)))
    except storage.StorageError as e:
        # webdataset appends the stream and URL to an exception's args; the message alone is the line.
        raise storage.StorageError(str(e.args[0])) from None


def tar_samples():
    """A pipeline stage like webdataset's `tarfile_to_samples()` (a stream of dict(url=...) in, raw
    samples out: member name -> bytes plus __key__ and __url__) that also streams fsspec URLs."""
    return _tar_samples


def raw_samples(pattern: str | os.PathLike | Sequence[str | os.PathLike]):
    """Every raw sample of the shards `pattern` names (see `shard_files`), in shard order, undecoded:
    a webdataset pipeline (the evaluation readers decode each sample themselves)."""
    import webdataset as wds

    return wds.DataPipeline(wds.SimpleShardList(shard_files(pattern)), tar_samples())


def aligned_crop(
    hr: np.ndarray, lr: np.ndarray, size: int, rng: np.random.Generator, flips: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A random HR crop of `size` pixels and the LR crop of size / scale at the same place.

    The LR position is drawn on the LR grid and multiplied by the scale, so the pair stays aligned
    pixel for pixel; with `flips`, both are flipped left-right and up-down with p 0.5 each.
    """
    scale = hr.shape[0] // lr.shape[0]
    if size % scale:
        raise SrDegradeError(f"crop size {size} must be a multiple of the scale {scale}")
    small = size // scale
    if lr.shape[0] < small or lr.shape[1] < small:
        raise SrDegradeError(f"crop {size} is larger than the sample ({hr.shape[1]}x{hr.shape[0]})")
    y = int(rng.integers(0, lr.shape[0] - small + 1))
    x = int(rng.integers(0, lr.shape[1] - small + 1))
    hr_c = hr[y * scale : (y + small) * scale, x * scale : (x + small) * scale]
    lr_c = lr[y : y + small, x : x + small]
    if flips:
        if rng.random() < 0.5:
            hr_c, lr_c = hr_c[:, ::-1], lr_c[:, ::-1]
        if rng.random() < 0.5:
            hr_c, lr_c = hr_c[::-1], lr_c[::-1]
    return np.ascontiguousarray(hr_c), np.ascontiguousarray(lr_c)


def _worker_seed(seed: int, epoch: int) -> np.random.Generator:
    from webdataset.utils import pytorch_worker_info

    rank, _, worker, _ = pytorch_worker_info()
    return np.random.default_rng([seed, rank, worker, epoch])


class _Augment:
    """Pipeline stage: decode, then aligned random crops and flips, from a per-rank/worker generator."""

    def __init__(self, crop: int | None, flips: bool, seed: int, transform: Callable | None):
        self.crop, self.flips, self.seed, self.transform = crop, flips, seed, transform
        self.epoch = -1

    def __call__(self, src: Iterator[dict]) -> Iterator[ShardSample]:
        self.epoch += 1
        rng = _worker_seed(self.seed, self.epoch)
        for raw in src:
            sample = decode_sample(raw)
            if self.crop:
                sample.hr, sample.lr = aligned_crop(sample.hr, sample.lr, self.crop, rng, self.flips)
            yield self.transform(sample, rng) if self.transform else sample


class _EvenSplit:
    """Pipeline stage for finite passes: sample i goes to (rank, worker) number i mod (ranks x workers).

    Every reader walks all shards and keeps its share, so no rank or worker is ever left without
    data, however few shards there are; each sample is seen exactly once overall.
    """

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        from webdataset.utils import pytorch_worker_info

        rank, world, worker, workers = pytorch_worker_info()
        slot, slots = rank * workers + worker, world * workers
        for i, sample in enumerate(src):
            if i % slots == slot:
                yield sample


def open_shards(
    pattern: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    crop: int | None = None,
    flips: bool = True,
    mode: str = "train",
    shuffle: int = 1000,
    seed: int = 0,
    transform: Callable[[ShardSample, np.random.Generator], Any] | None = None,
):
    """A webdataset pipeline (a torch IterableDataset) of `ShardSample`s from PromptSR shards.

    mode "train": an endless stream. Each (rank, worker) draws shards with replacement from its own
        deterministic generator (webdataset's ResampledShards, seeded by `seed`, rank and worker)
        and shuffles samples in a buffer of `shuffle`; no rank or worker can run dry or wait on
        another, even with fewer shards than ranks x workers. Count training in steps, not epochs.
    mode "eval": one finite pass in shard order, each sample exactly once across all ranks and
        workers (sample i goes to reader i mod (ranks x workers)); no shuffling, no flips.

    `crop` (a multiple of the scale) takes aligned random HR/LR crops; `transform(sample, rng)`
    runs last, with the reader's generator (e.g. to re-render the prompt in another format).
    Ranks and workers come from torch.distributed / the DataLoader worker, as webdataset reads them.
    """
    import webdataset as wds

    urls = shard_files(pattern)
    if mode == "train":
        stages = [
            wds.ResampledShards(urls, seed=seed, deterministic=True),
            tar_samples(),
            # Deterministic buffer shuffle; the streams already differ per rank and worker.
            wds.detshuffle(shuffle, initial=min(100, shuffle), seed=seed) if shuffle > 1 else (lambda src: src),
            _Augment(crop, flips, seed, transform),
        ]
    elif mode == "eval":
        stages = [
            wds.SimpleShardList(urls),
            tar_samples(),
            _EvenSplit(),
            _Augment(crop, False, seed, transform),
        ]
    else:
        raise SrDegradeError(f"unknown mode {mode!r}: use 'train' or 'eval'")
    return wds.DataPipeline(*stages)


def pad_embeddings(embs: Sequence[np.ndarray]) -> tuple[Any, Any]:
    """Stack [L_i, D] embeddings into (B, L_max, D) float32 zeros-padded and a (B, L_max) bool
    mask, True where a real token is (attend)."""
    import torch

    length = max(e.shape[0] for e in embs)
    emb = torch.zeros(len(embs), length, embs[0].shape[1])
    mask = torch.zeros(len(embs), length, dtype=torch.bool)
    for i, e in enumerate(embs):
        emb[i, : e.shape[0]] = torch.from_numpy(np.asarray(e, dtype=np.float32))
        mask[i, : e.shape[0]] = True
    return emb, mask


def collate(samples: Sequence[ShardSample]) -> dict[str, Any]:
    """Batch ShardSamples for a PyTorch loop.

    Returns hr and lr as float32 tensors (B, 3, H, W) in [0, 1]; emb as float32 (B, L_max, D) padded
    with zeros and mask (B, L_max) bool, True where a real token is (attend), when every sample has
    an embedding; plus the lists prompt, key and params. All samples must share crop sizes (use
    `crop=`) and the encoder.
    """
    import torch

    hr = torch.from_numpy(np.stack([s.hr for s in samples])).permute(0, 3, 1, 2).float().div_(255.0)
    lr = torch.from_numpy(np.stack([s.lr for s in samples])).permute(0, 3, 1, 2).float().div_(255.0)
    batch: dict[str, Any] = {
        "hr": hr,
        "lr": lr,
        "prompt": [s.prompt for s in samples],
        "key": [s.key for s in samples],
        "params": [s.params for s in samples],
    }
    if all(s.emb is not None for s in samples):
        batch["emb"], batch["mask"] = pad_embeddings([s.emb for s in samples])
    return batch


def parquet_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a parquet file (a local path or an fsspec URL) as dicts. A URL's bytes are read whole and
    handed to pyarrow as a native buffer: a Python file object there can abort the interpreter at exit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pa.BufferReader(storage.read_bytes(path)) if storage.is_url(path) else os.fspath(path)
    return pq.read_table(source).to_pylist()


def read_index(folder: str | Path) -> list[dict[str, Any]]:
    """Rows of a build's index.parquet as dicts; `folder` may be an fsspec URL (s3://bucket/shards/)."""
    return parquet_rows(storage.join(folder, "index.parquet"))


def read_build_info(pattern: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, Any]:
    """build.json of the folder holding the shards `pattern` names (the encoder, the degradation config,
    the prompt format), or the first part*-build.json of a build made in parts and not merged yet.

    Local folders: {} when there is none (shards copied alone; the callers say what they assume then).
    fsspec URLs: read from the same place, and a folder without one is a StorageError naming the URL
    and what to do, never a silent default: a URL usually means shards uploaded by hand, and training
    on them with a guessed encoder or degradation config would go unnoticed. `pipe:` commands: {} (no
    folder to look in).
    """
    first = shard_files(pattern)[0]
    if storage.is_url(first):
        folder = first.rsplit("/", 1)[0]
        url = storage.join(folder, "build.json")
        if not storage.exists(url):
            parts = storage.listdir(folder, "part*-build.json")
            if not parts:
                raise storage.StorageError(
                    f"{storage.shown(url)}: not found; shards read from a URL need their build.json beside them "
                    "(it names the encoder and degradation config): upload the whole build folder, the .tar "
                    "files with index.parquet and build.json"
                )
            url = parts[0]
        text = storage.read_bytes(url)
    elif _url_scheme(first) is not None:
        return {}
    else:
        parent = Path(first).parent
        names = ["build.json", *sorted(p.name for p in parent.glob("part*-build.json"))]
        found = next((parent / n for n in names if (parent / n).exists()), None)
        if found is None:
            return {}
        url, text = str(found), found.read_bytes()
    try:
        info = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise SrDegradeError(f"{storage.shown(url)}: not valid JSON ({e}); rebuild or re-upload it") from None
    if not isinstance(info, dict):
        raise SrDegradeError(f"{storage.shown(url)}: expected a JSON object (a build record)")
    return info
