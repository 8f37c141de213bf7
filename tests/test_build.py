"""The shard builder end to end on real files: round trip, determinism across workers, resume after
a kill, parts, bad files, refusals, and a full disk. Builds run the real code (library call or the
console script in a subprocess), write real webdataset shards and read them back."""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fill_pipe, photo_list, wait_for

from sr_degrade import DegradationParams, bins, degrade, parse_prompt, read_image
from sr_degrade.build import BuildOptions, build, merge_parts
from sr_degrade.imageio import encode_png, write_image
from sr_degrade.samples import sample_paths
from sr_degrade.shards import TAR_MTIME, decode_npy, open_shards, read_index

EXE = str(Path(sys.executable).parent / "sr-degrade")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=ENV, timeout=300, **kw)


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def members_by_key(folder: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def read_all(folder: Path) -> list:
    return list(open_shards(folder, mode="eval"))


@pytest.fixture(scope="module")
def minilm_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minilm") / "train"
    opts = BuildOptions(src="sample", out=out, text_encoder="minilm", shard_size=4, crops_per_image=2, workers=1)
    summary = build(opts, progress=False)
    assert summary.samples == 12 and summary.shards == 3 and summary.errors == 0
    return out


@pytest.fixture(scope="module")
def minilm():
    from sr_degrade.embed import load_text_encoder

    return load_text_encoder("minilm")


def test_round_trip_restores_pixels_parameters_and_embeddings(minilm_build, minilm):
    samples = read_all(minilm_build)
    assert len(samples) == 12
    photos = {p.name: read_image(p) for p in sample_paths()}
    for s in samples:
        x, y, w, h = s.meta["crop"]
        assert (w, h) == (256, 256)
        assert np.array_equal(s.hr, photos[s.meta["image"]][y : y + h, x : x + w])  # the source pixels
        params = DegradationParams.from_dict(s.meta["params"])
        assert np.array_equal(s.lr, degrade(s.hr, params))  # recomputed from the stored record
        assert s.lr.shape == (64, 64, 3)
        assert parse_prompt(s.prompt) == bins(params) == s.meta["bins"]
        expected = minilm.encode(s.prompt)
        assert s.emb.dtype == np.float16 and s.emb.tobytes() == expected.tobytes()
        assert s.meta["encoder"]["L"] == s.emb.shape[0] and s.meta["encoder"]["D"] == 384
        assert s.meta["encoder"]["id"] == minilm.info.id


def test_index_build_json_and_tar_metadata(minilm_build):
    rows = read_index(minilm_build)
    assert [r["key"] for r in rows] == [s.key for s in read_all(minilm_build)]
    assert {r["shard"] for r in rows} == {"train-000000.tar", "train-000001.tar", "train-000002.tar"}
    assert all(r["prompt"] and r["emb_len"] >= 2 and r["resize2"] == "downsample" for r in rows)
    info = json.loads((minilm_build / "build.json").read_text())
    assert info["status"] == "complete" and info["counts"]["samples"] == 12 and info["errors"] == 0
    assert info["encoder"]["dim"] == 384 and info["config"]["scale"] == 4 and info["fingerprint"]["seed"] == 0
    assert "numpy" in info["versions"]
    with tarfile.open(minilm_build / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert {m.mtime for m in members} == {TAR_MTIME} and {m.uname for m in members} == {"promptsr"}
    assert sorted({m.name.split(".", 1)[1] for m in members}) == ["emb.npy", "hr.png", "json", "lr.png", "txt"]
    assert all("." not in m.name.split(".", 1)[0] for m in members)


def test_same_bytes_with_one_and_two_workers(tmp_path):
    common = {"src": "sample", "text_encoder": "minilm", "shard_size": 5, "crops_per_image": 2, "seed": 7}
    build(BuildOptions(out=tmp_path / "w1", workers=1, **common), progress=False)
    build(BuildOptions(out=tmp_path / "w2", workers=2, **common), progress=False)
    one, two = shard_bytes(tmp_path / "w1"), shard_bytes(tmp_path / "w2")
    assert len(one) == 3 and one == two
    assert read_index(tmp_path / "w1") == read_index(tmp_path / "w2")


def test_killed_build_resumes_to_identical_shards(tmp_path):
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    args = ["build", "--text-encoder", "minilm", "--shard-size", "2", "--crops-per-image", "4", "--workers", "1"]
    args += ["--crop-size", "128"]
    full = photo_list(tmp_path / "full_src", names)
    assert cli(*args, "--src", str(full), "--out", str(tmp_path / "full")).returncode == 0
    # The same list with rocket a named pipe: the build writes the shards of the first three photos, then blocks.
    waiting = photo_list(tmp_path / "src", names, pipe="rocket")
    out = tmp_path / "killed"
    proc = subprocess.Popen([EXE, *args, "--src", str(waiting), "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for((out / "train-000005.tar").exists, proc, "the sixth shard")  # 3 photos x 4 crops / 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in sorted(out.glob("*.tar"))] == [f"train-{k:06d}.tar" for k in range(6)]
    assert json.loads((out / "build.json").read_text())["status"] == "running"
    fill_pipe(tmp_path / "src", "rocket")
    r = cli(*args, "--src", str(waiting), "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming after 6 complete shards" in r.stderr
    assert shard_bytes(out) == shard_bytes(tmp_path / "full")
    assert read_index(out) == read_index(tmp_path / "full")
    assert not list(out.glob("*.tmp"))


def test_parts_hold_exactly_the_samples_of_the_unsplit_build(tmp_path):
    common = {"src": "sample", "embed": False, "shard_size": 3, "crops_per_image": 2, "workers": 1}
    build(BuildOptions(out=tmp_path / "whole", **common), progress=False)
    for i in range(2):
        build(BuildOptions(out=tmp_path / "parts", part=(i, 2), **common), progress=False)
    assert sorted(p.name for p in (tmp_path / "parts").glob("*.tar"))[0].startswith("part0of2-train-")
    assert members_by_key(tmp_path / "parts") == members_by_key(tmp_path / "whole")
    merged = merge_parts(tmp_path / "parts")
    assert merged == {"parts": 2, "samples": 12}
    keys = [r["key"] for r in read_index(tmp_path / "parts")]
    assert keys == [r["key"] for r in read_index(tmp_path / "whole")]


def _exif_rotated_jpeg(rgb: np.ndarray) -> bytes:
    _, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    jpeg = buf.tobytes()
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_a_folder_of_awkward_files_builds_and_logs_each_failure(tmp_path):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    coffee = read_image(sample_paths()[2])  # 600 x 400
    full = encode_png(coffee)
    (src / "truncated.png").write_bytes(full[: len(full) // 2])
    (src / "notes.jpg").write_text("this is not a picture")
    wide = coffee.astype(np.uint16) * 257
    cv2.imwrite(str(src / "deep16.png"), np.ascontiguousarray(wide[..., ::-1]))
    cv2.imwrite(str(src / "sub" / "gray.png"), cv2.cvtColor(coffee, cv2.COLOR_RGB2GRAY))
    rgba = np.concatenate([coffee[..., ::-1], np.full((400, 600, 1), 255, np.uint8)], axis=2)
    cv2.imwrite(str(src / "rgba.png"), rgba)
    (src / "rotated.jpg").write_bytes(_exif_rotated_jpeg(coffee))
    write_image(src / "tiny.png", coffee[:10, :10])
    out = tmp_path / "out"
    r = cli("build", "--src", str(src), "--out", str(out), "--crop-size", "128", "--no-embed", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "7 images -> 4 samples" in r.stdout and "3 errors" in r.stdout
    errors = {json.loads(line)["image"]: json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()}
    assert set(errors) == {"truncated.png", "notes.jpg", "tiny.png"}
    assert "not a readable image" in errors["notes.jpg"]["reason"] and "notes.jpg" in errors["notes.jpg"]["path"]
    assert "smaller than the crop" in errors["tiny.png"]["reason"]
    samples = {s.meta["image"]: s for s in read_all(out)}
    assert set(samples) == {"deep16.png", "sub/gray.png", "rgba.png", "rotated.jpg"}
    rotated = read_image(src / "rotated.jpg")
    x, y, w, h = samples["rotated.jpg"].meta["crop"]
    assert samples["rotated.jpg"].meta["image_size"] == [400, 600]  # EXIF rotation applied: portrait
    assert np.array_equal(samples["rotated.jpg"].hr, rotated[y : y + h, x : x + w])
    x, y, w, h = samples["deep16.png"].meta["crop"]
    assert np.array_equal(samples["deep16.png"].hr, coffee[y : y + h, x : x + w])
    gray = samples["sub/gray.png"].hr
    assert np.array_equal(gray[..., 0], gray[..., 2])
    info = json.loads((out / "build.json").read_text())
    assert info["errors"] == 3 and info["counts"]["samples"] == 4


def test_existing_output_is_refused_unless_resume_matches_or_overwrite(tmp_path):
    base = ["build", "--src", "sample", "--out", str(tmp_path / "o"), "--no-embed", "--workers", "1"]
    assert cli(*base).returncode == 0
    before = shard_bytes(tmp_path / "o")
    r = cli(*base)
    assert r.returncode == 2 and "--resume" in r.stderr and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    r = cli(*base, "--seed", "5", "--resume")
    assert r.returncode == 2 and "differs in: seed" in r.stderr
    assert shard_bytes(tmp_path / "o") == before  # nothing complete lost
    r = cli(*base, "--resume")
    assert r.returncode == 0 and shard_bytes(tmp_path / "o") == before
    r = cli(*base, "--seed", "5", "--overwrite")
    assert r.returncode == 0 and shard_bytes(tmp_path / "o") != before


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_stops_cleanly_and_keeps_complete_shards(tmp_path):
    args = ["build", "--src", "sample", "--no-embed", "--workers", "1", "--shard-size", "2", "--crops-per-image", "2"]
    assert cli(*args, "--out", str(tmp_path / "full")).returncode == 0
    sizes = [p.stat().st_size for p in sorted((tmp_path / "full").glob("*.tar"))]
    # RLIMIT_FSIZE caps each file: let the first shard fit and the first larger one hit the "disk".
    first_too_big = next(j for j, size in enumerate(sizes) if size > sizes[0])
    out = tmp_path / "small"
    r = subprocess.run(
        [EXE, *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        preexec_fn=_limit_file_size(sizes[0]),
    )
    assert r.returncode == 2, r.stderr
    assert "disk full" in r.stderr and "--resume" in r.stderr and "Traceback" not in r.stderr
    kept = sorted(out.glob("*.tar"))
    assert len(kept) == first_too_big and not list(out.glob("*.tmp"))
    for shard in kept:  # every kept shard is complete and readable
        assert shard.read_bytes() == (tmp_path / "full" / shard.name).read_bytes()
    assert {r["shard"] for r in read_index(out)} == {p.name for p in kept}
    assert cli(*args, "--out", str(out), "--resume").returncode == 0
    assert shard_bytes(out) == shard_bytes(tmp_path / "full")


def test_unknown_encoder_and_bad_options_exit_with_a_message(tmp_path):
    r = cli("build", "--src", "sample", "--out", str(tmp_path / "x"), "--text-encoder", "no-such/encoder-xyz")
    assert r.returncode == 2 and "no-such/encoder-xyz" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()  # a refused build leaves no folder (nor its lock file) behind
    r = cli("build", "--src", "sample", "--out", str(tmp_path / "y"), "--crop-size", "250", "--no-embed")
    assert r.returncode == 2 and "multiple of the scale" in r.stderr
    r = cli("build", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z"), "--no-embed")
    assert r.returncode == 2 and "nowhere" in r.stderr


def test_val_mode_and_holdout(tmp_path):
    build(BuildOptions(src="sample", out=tmp_path / "val", val=True, embed=False, workers=1), progress=False)
    samples = read_all(tmp_path / "val")
    photos = {p.name: read_image(p) for p in sample_paths()}
    assert len(samples) == 6
    for s in samples:
        full = photos[s.meta["image"]]
        h, w = full.shape[0] // 4 * 4, full.shape[1] // 4 * 4
        assert s.hr.shape == (h, w, 3) and np.array_equal(s.hr, full[:h, :w])
    common = {"src": "sample", "embed": False, "workers": 1, "holdout": 0.5}
    build(BuildOptions(out=tmp_path / "rest", **common), progress=False)
    build(BuildOptions(out=tmp_path / "held", take="holdout", split="val", **common), progress=False)
    rest = {r["image"] for r in read_index(tmp_path / "rest")}
    held = {r["image"] for r in read_index(tmp_path / "held")}
    assert rest and held and not rest & held and rest | held == set(photos)
    assert all(p.name.startswith("val-") for p in (tmp_path / "held").glob("*.tar"))


def test_inspect_and_preview(minilm_build, tmp_path):
    r = cli("inspect", str(minilm_build))
    assert r.returncode == 0, r.stderr
    assert "12 samples from 6 images in 3 shards" in r.stdout
    assert "resize2  downsample 12 (100%)" in r.stdout and "most common prompts" in r.stdout
    report = json.loads(cli("inspect", str(minilm_build), "--json").stdout)
    assert sum(report["levels"]["noise"].values()) == 12 and report["encoder"]["dim"] == 384
    r = cli("preview", str(minilm_build), "-o", str(tmp_path / "grid.png"), "-n", "5")
    assert r.returncode == 0, r.stderr
    grid = read_image(tmp_path / "grid.png")
    assert grid.shape[0] >= 5 * 256 and grid.std() > 20


def test_embeddings_are_stored_once_per_prompt_and_decode(minilm_build):
    by_prompt: dict[str, set[bytes]] = {}
    for members in members_by_key(minilm_build).values():
        by_prompt.setdefault(members["txt"].decode(), set()).add(members["emb.npy"])
        assert decode_npy(members["emb.npy"]).dtype == np.float16
    assert all(len(v) == 1 for v in by_prompt.values())
