"""sr_degrade.torch on real shards and the bundled photos, through real DataLoader worker processes:
ShardDataset and DegradeOnTheFly (the builder's samples in epoch 0, determinism whatever the worker and
rank counts, set_epoch in persistent workers, one decode per image), collate, the README's training
loop, and the errors of bad input."""

from __future__ import annotations

import hashlib
import itertools
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sr_degrade.build import BuildOptions, build
from sr_degrade.errors import SrDegradeError
from sr_degrade.shards import open_shards
from sr_degrade.torch import DegradeOnTheFly, Interleaved, ShardDataset, collate

K = 2  # crops per image; 6 bundled photos -> 12 samples an epoch


def digest(item: dict) -> str:
    """The bytes of one item (both images as uint8, the prompt): equal digests = identical samples."""
    h = hashlib.sha256()
    for name in ("gt", "lq"):
        h.update((item[name] * 255).round().to(torch.uint8).numpy().tobytes())
    h.update(item["prompt"].encode())
    return h.hexdigest()


def unbatch(loader) -> dict[str, str]:
    out: dict[str, str] = {}
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            assert key not in out, f"{key} yielded twice"
            out[key] = digest({"gt": batch["gt"][i], "lq": batch["lq"][i], "prompt": batch["prompt"][i]})
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """The builder's shards of the bundled photos: 2 crops of 256 each, MiniLM embeddings, 3 shards."""
    out = tmp_path_factory.mktemp("torch_data") / "train"
    build(
        BuildOptions(src="sample", out=out, crops_per_image=K, shard_size=4, workers=1, text_encoder="minilm"),
        progress=False,
    )
    return out


def test_epoch0_is_the_builders_samples_with_embeddings(shards):
    """DegradeOnTheFly's epoch 0 holds the very samples `sr-degrade build` wrote (same keys, crops, LR
    bytes, prompts and embeddings); each unique prompt is encoded once in this process."""
    data = DegradeOnTheFly("sample", crop=256, crops_per_image=K, text_encoder="minilm", shuffle=0)
    items = {item["key"]: item for item in data}
    built = list(open_shards(shards, mode="eval"))
    assert len(built) == len(items) == 6 * K
    for s in built:
        item = items[s.key]
        assert torch.equal(item["gt"], torch.from_numpy(s.hr).permute(2, 0, 1).float() / 255)
        assert torch.equal(item["lq"], torch.from_numpy(s.lr).permute(2, 0, 1).float() / 255)
        assert item["prompt"] == s.prompt and item["params"] == s.params
        assert torch.equal(item["emb"], torch.from_numpy(s.emb.astype(np.float32)))
        assert item["mask"].all() and item["mask"].shape == (s.emb.shape[0],)
    assert len(data._embed._cache) == len({i["prompt"] for i in items.values()})
    batch = collate(list(items.values())[:5])
    lengths = [items[k]["emb"].shape[0] for k in batch["key"]]
    assert batch["emb"].shape == (5, max(lengths), 384)
    assert batch["mask"].sum(1).tolist() == lengths
    assert batch["lq"].shape == (5, 3, 64, 64) and batch["gt"].shape == (5, 3, 256, 256)


def test_same_seed_same_bytes_whatever_workers_and_ranks():
    """Epoch 1 (fresh crops and degradations) gives the same samples, byte for byte, with 0 or 2
    DataLoader workers and split over 1 or 3 simulated ranks; ranks are disjoint and cover the epoch."""

    def run(workers: int, rank: int = 0, world: int = 1, pad: bool = False, seed: int = 5) -> dict[str, str]:
        data = DegradeOnTheFly("sample", crop=128, crops_per_image=K, seed=seed, rank=rank, world_size=world, pad=pad)
        data.set_epoch(1)
        return unbatch(DataLoader(data, batch_size=3, num_workers=workers, collate_fn=collate))

    one = run(0)
    assert len(one) == 6 * K and all(k.endswith(("_c2", "_c3")) for k in one)  # epoch 1: crops K..2K-1
    assert run(2) == one
    ranks = [run(0, r, 3) for r in range(3)]
    assert sum(len(r) for r in ranks) == len(one)
    assert {k: v for r in ranks for k, v in r.items()} == one
    # padded (the default), every rank takes the same number of samples, wrapping to the epoch's start
    padded = [DegradeOnTheFly("sample", crop=128, crops_per_image=1, rank=r, world_size=4) for r in range(4)]
    assert [len(d) for d in padded] == [2, 2, 2, 2]
    assert len({it["key"] for d in padded for it in d}) == 6
    assert run(0, seed=6).keys() == one.keys() and run(0, seed=6) != one  # another seed, other samples


def test_set_epoch_reaches_persistent_workers_and_images_decode_once():
    data = DegradeOnTheFly("sample", crop=128, crops_per_image=3, seed=1)
    loader = DataLoader(data, batch_size=4, num_workers=2, collate_fn=collate, persistent_workers=True)
    seen = []
    for epoch in range(2):
        data.set_epoch(epoch)
        seen.append(unbatch(loader))
    assert [sorted({int(k.rsplit("_c", 1)[1]) for k in s}) for s in seen] == [[0, 1, 2], [3, 4, 5]]
    ref = DegradeOnTheFly("sample", crop=128, crops_per_image=3, seed=1, shuffle=0)
    ref.set_epoch(1)
    assert {it["key"]: digest(it) for it in ref} == seen[1]
    assert ref.decodes == 6  # 18 samples, each photo decoded once

    # the shuffle buffer mixes photos within a worker's stream; the list order keeps them together
    def changes(shuffle: int) -> int:
        stems = [
            it["key"].rsplit("_c", 1)[0]
            for it in DegradeOnTheFly("sample", crop=128, crops_per_image=3, shuffle=shuffle)
        ]
        return sum(a != b for a, b in itertools.pairwise(stems))

    assert changes(0) == 5 and changes(8) > 8


def stem_and_crop(key: str) -> tuple[str, int]:
    stem, crop = key.rsplit("_c", 1)
    return stem, int(crop)


def test_interleaved_takes_photos_in_turn_and_every_epoch_brings_new_samples():
    data = DegradeOnTheFly("sample", crop=64, crops_per_image=3, seed=2, shuffle=0)
    items = list(Interleaved(data, seed=5, start=1, stop=3))
    keys = [stem_and_crop(it["key"]) for it in items]
    # two epochs of 6 photos x 3 crops: each (photo, crop) once, crops 3-5 then 6-8 (epoch e: e * 3 + c)
    assert len(set(keys)) == len(keys) == 36
    assert sorted({c for _, c in keys[:18]}) == [3, 4, 5] and sorted({c for _, c in keys[18:]}) == [6, 7, 8]
    # in turn: each run of 6 is one crop of every photo, in a fresh order per round
    rounds = [keys[i : i + 6] for i in range(0, 36, 6)]
    assert all(len({stem for stem, _ in r}) == 6 and len({c for _, c in r}) == 1 for r in rounds)
    assert len({tuple(stem for stem, _ in r) for r in rounds}) > 1
    # the samples are DegradeOnTheFly's own (the builder's), and raw=True yields the same as uint8 arrays
    data.set_epoch(2)
    assert {it["key"]: digest(it) for it in data} == {it["key"]: digest(it) for it in items[18:]}
    key, hr, lr, prompt, _ = next(iter(Interleaved(data, seed=5, start=1, stop=2, raw=True)))
    assert (key, prompt) == (items[0]["key"], items[0]["prompt"]) and hr.dtype == np.uint8

    def chw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(2, 0, 1) / 255.0

    assert digest({"gt": chw(hr), "lq": chw(lr), "prompt": prompt}) == digest(items[0])
    # endless when stop is None
    assert len(list(itertools.islice(Interleaved(data, stop=None), 100))) == 100


@pytest.mark.parametrize("world", [2, 8])
def test_interleaved_readers_share_an_epoch_without_overlap(world):
    """Ranks x DataLoader workers split an epoch: with fewer photos than readers (8 > 6) too, no sample
    twice and none missing."""
    seen: list[str] = []
    for rank in range(world // 2):
        data = DegradeOnTheFly("sample", crop=64, crops_per_image=4, seed=0, rank=rank, world_size=world // 2)
        loader = DataLoader(Interleaved(data), batch_size=1, num_workers=2, collate_fn=collate)
        seen += [k for batch in loader for k in batch["key"]]
    assert len(seen) == len(set(seen)) == 24


@pytest.mark.filterwarnings("ignore:This DataLoader will create 7 worker processes")
def test_more_workers_than_images():
    data = DegradeOnTheFly("sample", crop=128, crops_per_image=1)
    keys = list(unbatch(DataLoader(data, batch_size=1, num_workers=7, collate_fn=collate)))
    assert sorted(keys) == sorted(it["key"] for it in data) and len(keys) == 6


def test_sources_lists_and_skipped_images(tmp_path, caplog):
    from sr_degrade.samples import sample_paths

    paths = sample_paths()
    data = DegradeOnTheFly([str(p) for p in paths], crop=512, crops_per_image=1)
    small = {p.name for p in paths} - {i.key for i in data.images}
    assert small == {"chelsea.png", "coffee.png", "rocket.jpg"}  # under 512 a side
    assert {k for k, _ in data.skipped} == small and "smaller than the crop 512" in data.skipped[0][1]
    with caplog.at_level(logging.WARNING, "sr_degrade.torch"), pytest.raises(SrDegradeError) as e:
        DegradeOnTheFly("sample", crop=2048)
    assert "source 'sample': no usable image for crop 2048 (6 skipped" in str(e.value)
    assert "smaller than the crop 2048" in caplog.text
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(SrDegradeError, match=f"folder {tmp_path} holds no images"):
        DegradeOnTheFly(str(tmp_path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    data = DegradeOnTheFly([str(broken), str(paths[0])], crop=128)
    assert [i.key for i in data.images] == ["astronaut.png"] and "broken.png" in data.skipped[0][1]
    for bad, message in [
        (dict(crop=130), "crop 130 must be a whole number of pixels, a multiple of the scale 4"),
        (dict(crops_per_image=0), "crops_per_image must be a whole number >= 1, got 0"),
        (dict(prompt_format="long"), "unknown prompt format 'long'"),
        (dict(rank=2, world_size=2), "rank 2 / world size 2"),
    ]:
        with pytest.raises(SrDegradeError, match=message):
            DegradeOnTheFly("sample", **bad)


def test_shard_dataset_eval_splits_ranks_and_workers(shards, monkeypatch):
    """Eval mode: every sample once across simulated ranks (RANK/WORLD_SIZE) and 2 workers each."""
    everything = {it["key"]: digest(it) for it in ShardDataset(shards, mode="eval")}
    assert len(everything) == 6 * K
    union: dict[str, str] = {}
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        part = unbatch(DataLoader(ShardDataset(shards, mode="eval"), batch_size=2, num_workers=2, collate_fn=collate))
        assert part and not part.keys() & union.keys()
        union.update(part)
    assert union == everything


def test_shard_dataset_train_crops_and_never_starves(shards):
    """Train mode with more workers than... a single shard: both workers stream; aligned crops."""
    data = ShardDataset(str(shards / "train-000000.tar"), crop=128, shuffle=8, seed=3)
    loader = DataLoader(data, batch_size=4, num_workers=2, collate_fn=collate)
    batches = [b for _, b in zip(range(6), loader)]  # 24 samples from a 4-sample shard: endless
    assert all(b["gt"].shape == (4, 3, 128, 128) and b["lq"].shape == (4, 3, 32, 32) for b in batches)
    assert all(b["emb"].shape[-1] == 384 and b["mask"].any(1).all() for b in batches)
    lo, hi = min(float(b["gt"].min()) for b in batches), max(float(b["gt"].max()) for b in batches)
    assert 0.0 <= lo < 0.2 and 0.8 < hi <= 1.0
    # aligned: the LR crop is the degraded HR crop's region (downscaled HR close to LR on average)
    b = batches[0]
    down = torch.nn.functional.interpolate(b["gt"], scale_factor=0.25, mode="area")
    shifted = torch.nn.functional.interpolate(b["gt"].roll(16, dims=3), scale_factor=0.25, mode="area")
    assert (down - b["lq"]).abs().mean() < (shifted - b["lq"]).abs().mean()


#: docs/library.md's training loop ("Using sr-degrade in your own SR project"), run as written.
README_LOOP = """\
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from sr_degrade.torch import DegradeOnTheFly, collate

data = DegradeOnTheFly("sample", crop=64, crops_per_image=16, seed=0)  # or a folder of your HR photos
loader = DataLoader(data, batch_size=8, num_workers=2, collate_fn=collate, persistent_workers=True)
net = torch.nn.Sequential(  # a small ESPCN-style x4 network that learns the residual over bicubic
    torch.nn.Conv2d(3, 32, 5, padding=2), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 3 * 16, 3, padding=1), torch.nn.PixelShuffle(4),
)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for epoch in range(3):
    data.set_epoch(epoch)  # fresh crops and degradations every epoch, in every worker
    total = 0.0
    for batch in loader:  # batch["lq"]: (8, 3, 16, 16), batch["gt"]: (8, 3, 64, 64), floats in [0, 1]
        sr = F.interpolate(batch["lq"], scale_factor=4, mode="bicubic") + net(batch["lq"])
        loss = F.l1_loss(sr, batch["gt"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(batch["lq"])
    print(f"epoch {epoch}: L1 {total / len(data):.4f}")
torch.save(net.state_dict(), "sr_net.pt")
"""


def test_readme_training_loop_runs_and_learns(tmp_path):
    assert len(README_LOOP.splitlines()) <= 25
    script = tmp_path / "loop.py"
    script.write_text(README_LOOP)
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    losses = [float(line.rsplit(" ", 1)[1]) for line in run.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) == 3 and losses[2] < losses[0], run.stdout
    state = torch.load(tmp_path / "sr_net.pt")
    assert state["4.weight"].shape == (48, 32, 3, 3)
