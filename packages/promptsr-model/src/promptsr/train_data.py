"""What the trainer feeds the model: shards or fresh degradations, prompts re-rendered per sample,
embeddings, device batches.

Every rank (and DataLoader worker) streams its own resampled shards through `sr_degrade.open_shards`
(aligned random crops and flips), or, with `data.photos`, its own share of the photos degraded afresh
every epoch (`FreshPhotos`); the DataLoader is not prepared by Accelerate, so no batch is dispatched
from rank 0. Prompts can be re-rendered per sample from the stored parameters in another
format (`data.prompt_formats`); those are encoded live through `sr_degrade.embed` (each unique prompt
once), and the stored embeddings are used whenever the prompt is the stored one.

Validation reads a fixed set: the first `val_samples` samples of the validation shards in key order,
centre-cropped, whatever the number of processes (`validation_samples`).
"""

from __future__ import annotations

import heapq
from typing import Any, NamedTuple

import numpy as np
import torch

from sr_degrade.config import DegradationConfig
from sr_degrade.shards import (
    ShardSample,
    aligned_crop,
    collate,
    decode_sample,
    open_shards,
    pad_embeddings,
    raw_samples,
    read_build_info,
)
from sr_degrade.text import describe

from .bicubic import bicubic_upsample, to_model_range
from .config import TrainConfig
from .errors import TrainingError


def shard_build_info(pattern: str) -> dict[str, Any]:
    """build.json of the folder holding the shards (encoder, config, prompt format): {} when a local
    folder has none; for shards at a URL (s3://, http(s)://, ...) read from the same place, and a clear
    error when it is not there (`sr_degrade.shards.read_build_info`)."""
    return read_build_info(pattern)


class RenderPrompt:
    """DataLoader-side transform: re-render a sample's prompt in a format drawn from `formats`.

    A sample keeps its stored prompt and embedding when the drawn format is the stored one; otherwise
    its embedding is dropped (emb = None) for the trainer to encode the new prompt live.
    """

    def __init__(self, formats: dict[str, float], stored_format: str, degradation: dict[str, Any]):
        self.names = list(formats)
        self.probs = np.array([formats[n] for n in self.names])
        self.stored = stored_format
        self.cfg_dict = degradation

    def __call__(self, sample, rng: np.random.Generator):
        fmt = self.names[int(rng.choice(len(self.names), p=self.probs))]
        if fmt != self.stored:
            cfg = DegradationConfig.from_dict(self.cfg_dict) if self.cfg_dict else DegradationConfig()
            sample.prompt = describe(sample.params, fmt, rng=rng, cfg=cfg)
            sample.emb = None
        return sample


def collate_with_embs(samples) -> dict[str, Any]:
    """`collate`, plus the per-sample stored embeddings (None where a prompt was re-rendered)."""
    batch = collate(samples)
    batch["embs"] = [s.emb for s in samples]
    return batch


class PromptEmbedder:
    """Stored embeddings where present, else the live encoder through a cache (loaded on first need)."""

    def __init__(self, encoder_name: str | None, expected: dict[str, Any] | None):
        self.name, self.expected = encoder_name, expected
        self.cache = None

    def _live(self, prompt: str) -> np.ndarray:
        if self.cache is None:
            from sr_degrade.embed import EmbeddingCache, check_same_encoder, load_text_encoder

            if self.name is None:
                raise TrainingError(
                    "prompts re-rendered in another format need the text encoder: set data.text_encoder "
                    "(e.g. minilm, or the encoder the shards were built with)"
                )
            encoder = load_text_encoder(self.name)
            if self.expected:
                check_same_encoder(self.expected, encoder.info, "the shards' embeddings")
            self.cache = EmbeddingCache(encoder)
        return self.cache(prompt)

    def __call__(self, prompts: list[str], stored: list[np.ndarray | None]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_embeddings([e if e is not None else self._live(p) for p, e in zip(prompts, stored)])

    @property
    def live_prompts(self) -> int:
        return len(self.cache) if self.cache is not None else 0


class FreshPhotos(torch.utils.data.IterableDataset):
    """`data.photos`: an endless stream of training samples degraded afresh, epoch after epoch, from photos.

    `sr_degrade.torch.DegradeOnTheFly` draws each sample (crop, degradation, prompt: the builder's, so epoch
    0 is exactly `sr-degrade build --crops-per-image K` at crop `photo_crop`) and `Interleaved` takes the
    photos in turn; each sample is then cut to an aligned random `crop` with flips, as shards are. Epochs
    start at `start`; prompts carry no embedding (the trainer encodes each unique prompt live, once).
    """

    def __init__(self, cfg: TrainConfig, degradation: DegradationConfig, start: int, transform=None):
        self.cfg, self.degradation, self.start, self.transform = cfg, degradation, start, transform
        # This rank, read here in the main process (DataLoader workers may not see torch.distributed).
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank, self.world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)

    def source(self):
        from sr_degrade.torch import DegradeOnTheFly

        d = self.cfg.data
        return DegradeOnTheFly(
            d.photos, self.degradation, d.photo_crop, crops_per_image=d.crops_per_photo, seed=self.cfg.run.seed,
            shuffle=0, rank=self.rank, world_size=self.world,
        )  # fmt: skip

    def __iter__(self):
        from sr_degrade.torch import Interleaved

        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.cfg.run.seed, self.rank, worker, self.start, 23])
        stream = Interleaved(self.source(), self.cfg.run.seed, start=self.start, stop=None, raw=True)
        for key, hr, lr, prompt, params in stream:
            hr, lr = aligned_crop(hr, lr, self.cfg.data.crop, rng)
            sample = ShardSample(key, hr, lr, prompt, params, {}, None)
            yield self.transform(sample, rng) if self.transform else sample


class Batch(NamedTuple):
    """One batch on the device, in the model's range: HR (B, 3, H, W), the bicubic-upsampled LR of
    the same size, the prompt embeddings (B, L, D) and their mask (B, L)."""

    hr: torch.Tensor
    cond: torch.Tensor
    emb: torch.Tensor
    mask: torch.Tensor


class TrainData:
    """The shards of a run and how their prompts become embeddings.

    Reads build.json once: the encoder the embeddings were made with, the stored prompt format, the
    degradation config and the scale. `encoder_info` is what the model is trained on (its `dim` sets
    the model's cross-attention width).
    """

    def __init__(self, cfg: TrainConfig):
        from sr_degrade.embed import check_same_encoder, encoder_name

        self.cfg = cfg
        self.photos = 0  #: with data.photos: how many photos the run degrades afresh
        if cfg.data.photos:
            self.info = {"config": DegradationConfig().to_dict()}
            self.photos = len(FreshPhotos(cfg, DegradationConfig(), 0).source().images)
        else:
            self.info = shard_build_info(cfg.data.train)
        shard_encoder = self.info.get("encoder")
        self.stored_format = self.info.get("fingerprint", {}).get("prompt_format", "original")
        formats = cfg.data.prompt_formats
        needs_live = any(p > 0 and f != self.stored_format for f, p in formats.items()) or not shard_encoder
        live_name = cfg.data.text_encoder or (encoder_name(shard_encoder) if shard_encoder else None)
        self.embedder = PromptEmbedder(live_name, shard_encoder)
        if needs_live:
            self.embedder(["light noise"], [None])  # load and check the encoder now, not at the first batch
        self.encoder_info: dict[str, Any] = shard_encoder or self.embedder.cache.info.to_dict()
        if cfg.data.val:
            val_encoder = shard_build_info(cfg.data.val).get("encoder")
            if val_encoder:
                check_same_encoder(self.encoder_info, val_encoder, f"the validation shards {cfg.data.val}")
        self.degradation: dict[str, Any] = self.info.get("config") or DegradationConfig().to_dict()
        self.scale = int(self.degradation.get("scale", 4))

    def loader(self, per_rank: int, step: int) -> torch.utils.data.DataLoader:
        """This rank's endless stream of collated batches of `per_rank` samples, seeded from (seed,
        step): a resumed run draws from the same distribution without repeating the start (it does
        not replay the exact samples an uninterrupted run would have drawn next: that would mean
        decoding everything skipped)."""
        cfg = self.cfg
        transform = None
        if any(f != self.stored_format for f in cfg.data.prompt_formats):
            transform = RenderPrompt(dict(cfg.data.prompt_formats), self.stored_format, self.info.get("config") or {})
        if cfg.data.photos:
            # The epoch an uninterrupted run would be in next: a resumed run draws new degradations.
            per_epoch = self.photos * cfg.data.crops_per_photo
            start = -(-step * cfg.optim.batch_size // per_epoch)
            photos = FreshPhotos(cfg, DegradationConfig.from_dict(self.degradation), start, transform)
            return torch.utils.data.DataLoader(
                photos, batch_size=per_rank, num_workers=cfg.data.num_workers, collate_fn=collate_with_embs
            )
        dataset = open_shards(
            cfg.data.train,
            crop=cfg.data.crop,
            mode="train",
            shuffle=cfg.data.shuffle_buffer,
            seed=cfg.run.seed * 1_000_003 + step,
            transform=transform,
        )
        return torch.utils.data.DataLoader(
            dataset, batch_size=per_rank, num_workers=cfg.data.num_workers, collate_fn=collate_with_embs
        )

    def to_device(self, batch: dict[str, Any], device: torch.device) -> Batch:
        """A collated batch as model inputs on `device` (the bicubic upsampling runs there)."""
        hr = to_model_range(batch["hr"].to(device, non_blocking=True))
        cond = bicubic_upsample(to_model_range(batch["lr"].to(device, non_blocking=True)), self.scale)
        emb, mask = self.embedder(batch["prompt"], batch["embs"])
        return Batch(hr, cond, emb.to(device, non_blocking=True), mask.to(device, non_blocking=True))


def validation_samples(pattern: str, count: int, crop: int, scale: int, multiple: int) -> list[ShardSample]:
    """The first `count` samples of the shards in key order, centre-cropped to square HR sides of
    min(crop, side) rounded down to `multiple` (scale x the model's size multiple), all one size.

    The same set whatever the number of processes: the shards are read whole here (not split by
    rank as `open_shards(mode="eval")` does); only the chosen samples are decoded. Samples smaller
    than the smallest chosen crop are dropped, so the batch has one size.
    """
    from .prompt_signal import centre_crop

    raw = raw_samples(pattern)
    chosen = heapq.nsmallest(count, raw, key=lambda r: r["__key__"])
    samples = []
    for r in chosen:
        s = decode_sample(r)
        side = min(crop, *s.hr.shape[:2])
        s.hr, s.lr = centre_crop(s.hr, s.lr, scale, multiple, side)
        samples.append(s)
    if not samples:
        return []
    size = min(s.hr.shape[0] for s in samples)
    return [s for s in samples if s.hr.shape[0] == size]
