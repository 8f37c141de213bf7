"""Reading shards back for training: aligned crops, collate with padding and mask, and splitting
across DataLoader workers and ranks that never starves or duplicates."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sr_degrade.build import BuildOptions, build
from sr_degrade.shards import aligned_crop, collate, open_shards, read_index


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Two shards of the bundled photos, simplified prompts (so embedding lengths differ)."""
    out = tmp_path_factory.mktemp("reader") / "train"
    opts = BuildOptions(
        src="sample",
        out=out,
        text_encoder="minilm",
        shard_size=6,
        crops_per_image=2,
        workers=1,
        prompt_format="simplified",
    )
    build(opts, progress=False)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_aligned_crop_keeps_hr_and_lr_in_register(seed):
    rng = np.random.default_rng(seed)
    lr = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    hr = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)  # each LR pixel is a 4x4 HR block
    for _ in range(20):
        hr_c, lr_c = aligned_crop(hr, lr, 64, rng, flips=True)
        assert hr_c.shape == (64, 64, 3) and lr_c.shape == (16, 16, 3)
        assert np.array_equal(hr_c, np.repeat(np.repeat(lr_c, 4, axis=0), 4, axis=1))


def test_aligned_crop_refuses_sizes_it_cannot_honour():
    hr, lr = np.zeros((64, 64, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="multiple of the scale"):
        aligned_crop(hr, lr, 30, np.random.default_rng(0))
    with pytest.raises(ValueError, match="larger than the sample"):
        aligned_crop(hr, lr, 128, np.random.default_rng(0))


def test_collate_pads_embeddings_and_masks(shards):
    samples = list(itertools.islice(open_shards(shards, crop=128, mode="train", shuffle=20), 8))
    lengths = [s.emb.shape[0] for s in samples]
    assert len(set(lengths)) > 1, "simplified prompts should give different lengths"
    batch = collate(samples)
    assert batch["hr"].shape == (8, 3, 128, 128) and batch["lr"].shape == (8, 3, 32, 32)
    assert batch["hr"].dtype == torch.float32 and 0 <= batch["hr"].min() and batch["hr"].max() <= 1
    assert batch["emb"].shape == (8, max(lengths), 384)
    assert batch["mask"].sum(dim=1).tolist() == lengths
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(batch["emb"][i, : lengths[i]].numpy(), s.emb.astype(np.float32))
        assert not batch["emb"][i, lengths[i] :].any()
    assert batch["prompt"] == [s.prompt for s in samples]


def test_train_stream_is_endless_deterministic_and_feeds_every_worker(shards):
    def keys(num_workers: int, n: int = 30) -> list[str]:
        loader = DataLoader(
            open_shards(shards, crop=64, mode="train", shuffle=10, seed=3),
            batch_size=3,
            num_workers=num_workers,
            collate_fn=collate,
        )
        return [k for batch in itertools.islice(loader, n // 3) for k in batch["key"]]

    # Two shards, two workers x more batches than the data holds: it never runs dry.
    a = keys(2, 60)
    assert len(a) == 60 and len(set(a)) > 6
    assert keys(2, 60) == a  # same seed, same stream
    assert keys(0, 30) == keys(0, 30)  # in-process reading is reproducible too


def _eval_keys(shards: Path, rank: int, world: int, workers: int) -> list[str]:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    try:
        loader = DataLoader(open_shards(shards, mode="eval"), batch_size=None, num_workers=workers)
        return [s.key for s in loader]
    finally:
        del os.environ["RANK"], os.environ["WORLD_SIZE"]


def test_eval_pass_sees_each_sample_exactly_once_across_ranks_and_workers(shards):
    expected = sorted(r["key"] for r in read_index(shards))
    assert len(expected) == 12
    # 2 shards, 3 ranks x 2 workers = 6 readers: more readers than shards, and none starves.
    per_rank = [_eval_keys(shards, r, 3, 2) for r in range(3)]
    assert all(len(keys) == 4 for keys in per_rank)
    assert sorted(itertools.chain(*per_rank)) == expected


def test_train_stream_feeds_every_rank_with_fewer_shards_than_readers(shards):
    os.environ.update(RANK="2", WORLD_SIZE="4")
    try:
        loader = DataLoader(
            open_shards(shards, crop=64, mode="train", shuffle=5), batch_size=2, num_workers=2, collate_fn=collate
        )
        batches = list(itertools.islice(loader, 6))
    finally:
        del os.environ["RANK"], os.environ["WORLD_SIZE"]
    assert len(batches) == 6 and all(b["hr"].shape == (2, 3, 64, 64) for b in batches)
