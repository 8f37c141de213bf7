"""PyTorch data interface for other SR codebases: shards or on-the-fly degradation, as `lq`/`gt` batches.

    from sr_degrade.torch import DegradeOnTheFly, ShardDataset, collate

    data = DegradeOnTheFly("my_photos/", crop=256, crops_per_image=8, seed=0)   # fresh degradations each epoch
    data = ShardDataset("shards/train", crop=256)                            # or shards from `sr-degrade build`
    loader = DataLoader(data, batch_size=16, num_workers=4, collate_fn=collate, persistent_workers=True)
    for epoch in range(epochs):
        data.set_epoch(epoch)          # DegradeOnTheFly: reaches persistent workers too
        for batch in loader:           # batch["lq"], batch["gt"]: float32 (B, 3, H, W) in [0, 1]
            ...

Both datasets yield dicts with the key names SR codebases use (BasicSR's `lq`/`gt`): `lq` and `gt` as
float32 tensors (3, H, W) in [0, 1], `prompt` (str), `params` (`DegradationParams`, the exact degradation),
`key` (str), and with embeddings `emb` (float32 [L, D]) and `mask` (bool [L], True = attend). `collate`
stacks them and pads `emb`/`mask` to the longest L of the batch.

This is the only module of sr-degrade that imports torch (install torch yourself, or `sr-degrade[torch]`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from sr_degrade.config import DegradationConfig
from sr_degrade.errors import ImageError, SrDegradeError, printable
from sr_degrade.imageio import MAX_PIXELS, read_image, read_image_size
from sr_degrade.params import DegradationParams, degrade, sample_params, sample_rng, stable_hash
from sr_degrade.shards import ShardSample, open_shards, sample_key
from sr_degrade.sources import Source, open_source
from sr_degrade.text import PROMPT_FORMATS, describe

__all__ = ["DegradeOnTheFly", "Interleaved", "ShardDataset", "collate", "to_item"]

log = logging.getLogger("sr_degrade.torch")

_EMBED_HINT = "pip install 'sr-degrade[embed]' (torch and transformers)"


def _chw(img: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def to_item(
    key: str, gt: np.ndarray, lq: np.ndarray, prompt: str, params: DegradationParams, emb: np.ndarray | None
) -> dict[str, Any]:
    """One sample as the dict both datasets yield (see the module doc)."""
    item: dict[str, Any] = {"lq": _chw(lq), "gt": _chw(gt), "prompt": prompt, "params": params, "key": key}
    if emb is not None:
        item["emb"] = torch.from_numpy(np.asarray(emb, dtype=np.float32))
        item["mask"] = torch.ones(emb.shape[0], dtype=torch.bool)
    return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items of `ShardDataset` / `DegradeOnTheFly`: `lq` (B, 3, h, w) and `gt` (B, 3, H, W) float32
    in [0, 1]; `emb` (B, L_max, D) float32 zeros-padded and `mask` (B, L_max) bool (True = attend) when
    every item has an embedding; `prompt`, `params`, `key` (and `index` where present) as lists."""
    if not items:
        raise SrDegradeError("collate: empty batch")
    batch: dict[str, Any] = {"lq": torch.stack([i["lq"] for i in items]), "gt": torch.stack([i["gt"] for i in items])}
    for name in ("prompt", "params", "key", "index"):
        if all(name in i for i in items):
            batch[name] = [i[name] for i in items]
    if all("emb" in i for i in items):
        length = max(i["emb"].shape[0] for i in items)
        dim = items[0]["emb"].shape[1]
        if any(i["emb"].shape[1] != dim for i in items):
            raise SrDegradeError("collate: embeddings of different widths D in one batch (two text encoders?)")
        emb = torch.zeros(len(items), length, dim)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for b, i in enumerate(items):
            emb[b, : i["emb"].shape[0]] = i["emb"]
            mask[b, : i["emb"].shape[0]] = True
        batch["emb"], batch["mask"] = emb, mask
    return batch


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit arguments, else torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            r, w = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            r, w = 0, 1
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise SrDegradeError(f"rank {rank!r} / world size {world_size!r}: need 0 <= rank < world size")
    return rank, world_size


def _check_embed_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise SrDegradeError(f"text embeddings need the [embed] extra of sr-degrade: {_EMBED_HINT}")


class _Embedder:
    """prompt -> embedding in each process, the encoder loaded at first use and each prompt encoded once."""

    def __init__(self, text_encoder: str):
        self.name = text_encoder
        self._cache = None

    def __call__(self, prompt: str) -> np.ndarray:
        if self._cache is None:
            from sr_degrade.embed import EmbeddingCache, load_text_encoder

            torch.set_num_threads(1)  # one worker, one core: no oversubscription next to other workers
            self._cache = EmbeddingCache(load_text_encoder(self.name))
        return self._cache(prompt)

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "_cache": None}  # workers load their own copy; never pickle weights


# ---------------------------------------------------------------------------------------------------------
# Shards


class ShardDataset(IterableDataset):
    """Samples of PromptSR shards (`sr-degrade build`) as `lq`/`gt` items, through `open_shards`.

    `urls_or_dir`: a folder of .tar shards, a glob, a brace pattern, a URL pattern or a list.
    mode "train": an endless, shuffled stream; every (rank, worker) resamples shards on its own, so
    none waits or runs dry however few shards there are (count training in steps).
    mode "eval": one pass, each sample exactly once across all ranks and workers, in shard order.
    `crop` (a multiple of the scale) takes aligned random crops, with flips when `flips` (train only).
    Ranks come from torch.distributed, or the RANK and WORLD_SIZE environment variables.
    """

    def __init__(
        self,
        urls_or_dir: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        crop: int | None = None,
        mode: str = "train",
        flips: bool = True,
        shuffle: int = 1000,
        seed: int = 0,
        embeddings: bool = True,
    ):
        self.pipeline = open_shards(urls_or_dir, crop=crop, flips=flips, mode=mode, shuffle=shuffle, seed=seed)
        self.embeddings = embeddings

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for s in self.pipeline:
            yield self._item(s)

    def _item(self, s: ShardSample) -> dict[str, Any]:
        return to_item(s.key, s.hr, s.lr, s.prompt, s.params, s.emb if self.embeddings else None)


# ---------------------------------------------------------------------------------------------------------
# On-the-fly degradation


@dataclass(frozen=True)
class _Image:
    key: str
    path: str


class DegradeOnTheFly(IterableDataset):
    """HR crops of a source, degraded afresh every epoch with the paper's model (`sample_params` +
    `degrade`), as `lq`/`gt` items with their prompt and exact parameters.

    source: what `sr-degrade build --src` accepts (a folder, a list file, a named source with `root`,
        "sample"), an opened `Source`, or a list of image paths (keyed by file name).
    crop: HR crop side in pixels (a multiple of the scale); images smaller are skipped with a logged
        reason, and a source left with none is an error naming it.
    crops_per_image: samples per image and epoch; an epoch holds len(images) x crops_per_image samples.

    Determinism: sample c of image `key` in epoch e is drawn from `sample_rng(seed, key, e *
    crops_per_image + c)`, the builder's generator, so epoch 0 holds exactly the samples (same crop,
    same LR bytes, same prompt) of `sr-degrade build --crops-per-image K --seed S`, and each later epoch
    new ones. A sample never depends on the worker count or the rank count; only which reader yields it
    does. Each epoch visits the images in a fresh order drawn from (seed, epoch); the epoch's sample list
    is cut into equal contiguous blocks, one per rank (padded by wrapping to the epoch's start, as
    DistributedSampler does, so every rank takes the same number of steps; `pad=False` drops that), then
    one per DataLoader worker. Samples of one image are neighbours in that list, so a worker decodes each
    image once and crops it many times; a buffer of `shuffle` samples per worker mixes images in batches
    (0: the list order). Call `set_epoch(e)` before each epoch; it reaches persistent workers.

    text_encoder: None (no embeddings) or a name/path for `sr_degrade.embed.load_text_encoder` ("minilm"
        offline); each process loads it once and encodes each unique prompt once. Needs `sr-degrade[embed]`.
    """

    def __init__(
        self,
        source: str | os.PathLike | Source | Sequence[str | os.PathLike],
        cfg: DegradationConfig | None = None,
        crop: int = 256,
        *,
        crops_per_image: int = 1,
        seed: int = 0,
        prompt_format: str = "original",
        text_encoder: str | None = None,
        shuffle: int = 64,
        pad: bool = True,
        root: str | Path | None = None,
        split: str = "train",
        rank: int | None = None,
        world_size: int | None = None,
        max_pixels: int = MAX_PIXELS,
    ):
        self.cfg = cfg if cfg is not None else DegradationConfig()
        if not isinstance(self.cfg, DegradationConfig):
            raise SrDegradeError(f"cfg must be a DegradationConfig, got {type(self.cfg).__name__}")
        scale = self.cfg.scale
        if not isinstance(crop, int) or isinstance(crop, bool) or crop < scale or crop % scale:
            raise SrDegradeError(f"crop {crop!r} must be a whole number of pixels, a multiple of the scale {scale}")
        for name, value, low in (("crops_per_image", crops_per_image, 1), ("shuffle", shuffle, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SrDegradeError(f"{name} must be a whole number >= {low}, got {value!r}")
        if prompt_format not in PROMPT_FORMATS:
            raise SrDegradeError(f"unknown prompt format {prompt_format!r}; choose one of {list(PROMPT_FORMATS)}")
        if text_encoder is not None:
            _check_embed_extra()
        self.crop, self.crops_per_image, self.seed = crop, crops_per_image, int(seed)
        self.prompt_format, self.shuffle, self.pad, self.max_pixels = prompt_format, shuffle, pad, max_pixels
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.source_name, images = self._open(source, root, split)
        self.skipped: list[tuple[str, str]] = []
        self.images = self._usable(images)
        self._embed = _Embedder(text_encoder) if text_encoder is not None else None
        #: images decoded by this process's iterations (a statistic: each image once per epoch and reader)
        self.decodes = 0
        # Shared memory, so set_epoch reaches DataLoader workers that persist across epochs.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    # -- construction -------------------------------------------------------------------------------

    @staticmethod
    def _open(source: Any, root: Any, split: str) -> tuple[str, list[_Image]]:
        if isinstance(source, Source):
            return source.describe(), [_Image(i.key, str(i.path)) for i in source.images]
        if isinstance(source, (list, tuple)):
            if not source:
                raise SrDegradeError("DegradeOnTheFly: the list of images is empty")
            images = [_Image(Path(p).name, os.path.abspath(p)) for p in source]
            dups = sorted({i.key for i in images if sum(j.key == i.key for j in images) > 1})
            if dups:
                raise SrDegradeError(f"DegradeOnTheFly: two images share a file name (the sample key): {dups[:5]}")
            return f"the list of {len(images)} images", sorted(images, key=lambda i: i.key)
        if not isinstance(source, (str, os.PathLike)):
            raise SrDegradeError(f"DegradeOnTheFly: unsupported source {source!r} (a path, a name, a list, a Source)")
        opened = open_source(str(source), root=root, split=split)
        return f"source {str(source)!r}", [_Image(i.key, str(i.path)) for i in opened.images]

    def _usable(self, images: list[_Image]) -> list[_Image]:
        """The images whose header says they hold a crop; the others are logged and listed in `skipped`."""
        usable = []
        for img in images:
            try:
                w, h = read_image_size(img.path, self.max_pixels)
            except ImageError as e:
                self.skipped.append((img.key, str(e)))
                continue
            if w < self.crop or h < self.crop:
                self.skipped.append((img.key, f"{img.path}: {w}x{h} is smaller than the crop {self.crop}"))
                continue
            usable.append(img)
        for _key, reason in self.skipped:
            log.warning("skipped: %s", printable(reason))
        if not usable:
            why = f"; e.g. {printable(self.skipped[0][1])}" if self.skipped else ""
            raise SrDegradeError(
                f"DegradeOnTheFly: {printable(self.source_name)}: no usable image for crop {self.crop} "
                f"({len(self.skipped)} skipped{why})"
            )
        return usable

    # -- epochs and indices -------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's degradations and order (also in persistent DataLoader workers)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all its workers together)."""
        return len(self.rank_positions())

    @staticmethod
    def _block(total: int, part: int, parts: int) -> range:
        """The `part`-th of `parts` contiguous, near-equal blocks of range(total)."""
        return range(total * part // parts, total * (part + 1) // parts)

    def rank_positions(self) -> range:
        """Positions in the epoch's sample list that this rank yields (before worker splitting)."""
        total = len(self.images) * self.crops_per_image
        if self.pad:
            per = -(-total // self.world_size)
            return range(self.rank * per, (self.rank + 1) * per)
        return self._block(total, self.rank, self.world_size)

    def image_order(self, epoch: int) -> np.ndarray:
        """The order images are visited in `epoch` (a permutation drawn from (seed, epoch))."""
        rng = np.random.default_rng([self.seed, int(epoch), stable_hash("DegradeOnTheFly.order")])
        return rng.permutation(len(self.images))

    def sample(self, image: int, crop_index: int, epoch: int, full: np.ndarray | None = None) -> dict[str, Any]:
        """Sample `crop_index` of image number `image` (in the sorted source) in `epoch`: a pure function
        of (seed, epoch, image key, crop index); `full` is the decoded image when the caller has it."""
        key, gt, lq, prompt, params = self.draw(image, crop_index, epoch, full)
        emb = self._embed(prompt) if self._embed is not None else None
        return to_item(key, gt, lq, prompt, params, emb)

    def draw(
        self, image: int, crop_index: int, epoch: int, full: np.ndarray | None = None
    ) -> tuple[str, np.ndarray, np.ndarray, str, DegradationParams]:
        """`sample` before it becomes tensors: (key, HR crop, LR, prompt, parameters), images H x W x 3 uint8."""
        img = self.images[image]
        if full is None:
            full = read_image(img.path, self.max_pixels)
        c = int(epoch) * self.crops_per_image + crop_index
        rng = sample_rng(self.seed, img.key, c)
        h, w = full.shape[:2]
        y = int(rng.integers(0, h - self.crop + 1))
        x = int(rng.integers(0, w - self.crop + 1))
        gt = np.ascontiguousarray(full[y : y + self.crop, x : x + self.crop])
        params = sample_params(self.cfg, rng)
        lq = degrade(gt, params)
        prompt = describe(params, self.prompt_format, rng=rng, cfg=self.cfg)
        return sample_key(img.key, c), gt, lq, prompt, params

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self.epoch
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            import cv2

            cv2.setNumThreads(1)  # one sample at a time per worker: OpenCV threads would oversubscribe cores
        ranked = self.rank_positions()
        block = self._block(len(ranked), worker, workers)
        mine = ranked[block.start : block.stop]
        order = self.image_order(epoch)
        total = len(self.images) * self.crops_per_image
        k = self.crops_per_image
        buffer: list[dict[str, Any]] = []
        mix = np.random.default_rng([self.seed, epoch, self.rank, worker, stable_hash("DegradeOnTheFly.mix")])
        decoded: tuple[int, np.ndarray | None] = (-1, None)
        for position in mine:
            index = position % total
            image, crop_index = int(order[index // k]), index % k
            if decoded[0] != image:
                self.decodes += 1
                try:
                    decoded = (image, read_image(self.images[image].path, self.max_pixels))
                except ImageError as e:
                    log.warning("skipped (cannot decode): %s", printable(str(e)))
                    decoded = (image, None)
            if decoded[1] is None:
                continue
            item = self.sample(image, crop_index, epoch, decoded[1])
            item["index"] = index
            if self.shuffle <= 1:
                yield item
                continue
            buffer.append(item)
            if len(buffer) >= self.shuffle:
                yield buffer.pop(int(mix.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(mix.integers(len(buffer))))


class Interleaved(IterableDataset):
    """The samples of a `DegradeOnTheFly` (its pure `sample`: each crop and its degradation are the
    builder's), the photos taken in turn, epoch after epoch.

    DegradeOnTheFly's own order keeps one photo's crops together (decoded once, mixed by a buffer). With a
    few photos cropped many times, a buffer smaller than a photo's crops streams the photos one after
    another, and a network trained on that stream (its normalisation statistics above all) ends fitted to
    the last photo. Here each reader (rank x DataLoader worker) decodes a window of up to `window` of its
    photos and yields one crop of each per round, in a fresh order every round; memory holds `window`
    decoded photos per reader.

    epochs: `range(start, stop)` of epochs (`stop` None: endless); epoch e draws crop indices
        e * crops_per_image + c, so every epoch brings new crops and new degradations.
    raw: yield `DegradeOnTheFly.draw` tuples (uint8 arrays) instead of tensor items.
    Readers: with at least as many photos as readers, reader r of R takes the photos r, r + R, ...;
    with fewer, reader r takes photo r mod n and every k-th of its crops (k: the readers of that photo),
    so no sample is yielded twice or missed in an epoch and no reader is left without data.
    """

    def __init__(self, dataset: DegradeOnTheFly, seed: int = 0, *, start: int = 0, stop: int | None = 1,
                 window: int = 16, raw: bool = False):  # fmt: skip
        if not isinstance(dataset, DegradeOnTheFly):
            raise SrDegradeError(f"Interleaved wraps a DegradeOnTheFly, got {type(dataset).__name__}")
        if window < 1 or start < 0 or (stop is not None and stop < start):
            raise SrDegradeError(f"Interleaved: need window >= 1, 0 <= start <= stop; got {window}, {start}, {stop}")
        self.dataset, self.seed, self.start, self.stop, self.window = dataset, int(seed), start, stop, window
        self.raw = raw

    def reader_share(self, reader: int, readers: int) -> tuple[list[int], int, int]:
        """(photo numbers, first crop, crop stride) of reader `reader` of `readers`."""
        n = len(self.dataset.images)
        if n >= readers:
            return list(range(reader, n, readers)), 0, 1
        photo = reader % n
        return [photo], reader // n, len(range(photo, readers, n))  # the photo's crops among its readers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            import cv2

            cv2.setNumThreads(1)  # one sample at a time per worker: OpenCV threads would oversubscribe cores
        ds = self.dataset
        reader, readers = ds.rank * workers + worker, ds.world_size * workers
        mine, first, stride = self.reader_share(reader, readers)
        rng = np.random.default_rng([self.seed, reader, 17])
        epoch = self.start
        while self.stop is None or epoch < self.stop:
            yielded = 0
            for begin in range(0, len(mine), self.window):
                window = mine[begin : begin + self.window]
                full = {}
                for i in window:
                    try:
                        full[i] = read_image(ds.images[i].path, ds.max_pixels)
                    except ImageError as e:
                        log.warning("skipped (cannot decode): %s", printable(str(e)))
                ds.decodes += len(full)
                for c in range(first, ds.crops_per_image, stride):
                    for i in rng.permutation(list(full)):
                        yielded += 1
                        yield (ds.draw if self.raw else ds.sample)(int(i), c, epoch, full[int(i)])
            if not yielded and mine and first < ds.crops_per_image:
                raise SrDegradeError(
                    f"Interleaved: {printable(ds.source_name)}: none of this reader's {len(mine)} photos decodes"
                )
            epoch += 1
