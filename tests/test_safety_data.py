"""sr-degrade with untrusted files and careless runs (issue 10): shard paths that look like commands,
two builds on one output, images whose headers claim billions of pixels, odd file names, shards cut
at a member boundary, configs and members that would exhaust memory or unpickle, escape sequences in
an index, and a command line that speaks in one line. Everything runs on real files and real
processes; each test asserts the message and that nothing was written, run or lost."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fill_pipe, photo_list, wait_for

from sr_degrade import ImageError, SrDegradeError, read_image
from sr_degrade.build import BuildOptions, BuildSummary, _unique_keys, _write_index, build
from sr_degrade.errors import BuildError, ConfigError, LockError
from sr_degrade.imageio import check_image_size, decode_image, encode_png, image_size, read_image_size
from sr_degrade.locks import exclusive
from sr_degrade.params import stable_hash
from sr_degrade.report import _preview_samples, format_inspection, inspect_build
from sr_degrade.samples import sample_paths
from sr_degrade.shards import decode_sample, open_shards, read_index, shard_files

EXE = str(Path(sys.executable).parent / "sr-degrade")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
SMALL = {"src": "sample", "embed": False, "workers": 1, "crop_size": 64, "crops_per_image": 2, "shard_size": 4}


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=ENV, timeout=120, **kw)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path:
    """6 photos x 2 crops of 64 px, 4 samples a shard: 12 samples in 3 shards."""
    out = tmp_path_factory.mktemp("small") / "train"
    summary = build(BuildOptions(out=out, **SMALL), progress=False)
    assert (summary.samples, summary.shards) == (12, 3)
    return out


def png(width: int, height: int, gray: bool = False, pixels: bytes = bytes(64)) -> bytes:
    """A PNG file whose header claims width x height, holding `pixels` (filtered rows) as its data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if gray else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(pixels, 9)) + chunk(b"IEND", b"")


# ---- 2. shard paths are files, never commands ------------------------------------------------------


def test_a_shard_named_like_a_command_is_read_as_a_file(small_build, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    evil = "pipe:touch PWNED;.tar"
    shutil.copy(small_build / "train-000000.tar", folder / evil)
    monkeypatch.chdir(folder)  # where the shell would run the command
    expected = [s.key for s in open_shards(small_build / "train-000000.tar", mode="eval")]
    for pattern in ("*.tar", "pi*", ".", str(folder), "{pipe:touch PWNED;,nothing}.tar"):
        files = [p for p in shard_files(pattern) if os.path.exists(p)]
        assert files == [str(folder / evil)], pattern  # absolute paths: opened as files
        if "{" not in pattern:
            assert [s.key for s in open_shards(pattern, mode="eval")] == expected
        assert not (folder / "PWNED").exists(), f"{pattern!r} ran a command"
    # An explicit URL stays the user's URL (streaming from object storage), and nothing runs here.
    assert shard_files("pipe:cat a-{0..1}.tar") == ["pipe:cat a-0.tar", "pipe:cat a-1.tar"]
    assert shard_files([evil]) == [evil] and shard_files(["x.tar"]) == [str(folder / "x.tar")]
    assert not (folder / "PWNED").exists()


# ---- 3. two processes never write one output --------------------------------------------------------


def test_a_second_build_on_one_output_is_refused_and_a_killed_holder_frees_it(tmp_path):
    # The holder's first photo is a named pipe: it holds the lock, has written build.json, and waits there.
    photos = photo_list(tmp_path / "src", ["astronaut", "chelsea", "coffee", "rocket"], pipe="astronaut")
    out = tmp_path / "o"
    args = ["build", "--src", str(photos), "--no-embed", "--workers", "1", "--crop-size", "64"]
    args += ["--crops-per-image", "8", "--shard-size", "4", "--out", str(out)]
    holder = subprocess.Popen([EXE, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = out / ".train.lock"
    try:
        held = lambda: lock.exists() and lock.read_text().split()[:1] == [str(holder.pid)]  # noqa: E731
        wait_for(lambda: held() and (out / "build.json").exists(), holder, "the holder's lock and build.json")
        before = tree(out)
        for extra in ([], ["--resume"], ["--overwrite"]):
            line = one_error_line(cli(*args, *extra))
            assert f"in use by process {holder.pid}" in line and str(out) in line
        assert tree(out) == before  # the refused runs wrote nothing, deleted nothing
        assert holder.poll() is None  # still waiting on its pipe, the lock still its own
        # Parts of a job array write into one --out side by side (part 1/2: coffee and rocket, no pipe).
        r = cli(*args, "--part", "1/2")
        assert r.returncode == 0, r.stderr
        assert list(out.glob("part1of2-train-*.tar"))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    fill_pipe(tmp_path / "src", "astronaut")
    r = cli(*args, "--resume")  # the kernel freed the dead holder's lock
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "build.json").read_text())["status"] == "complete"


def test_the_lock_helper_refuses_a_second_holder_and_frees_on_exit(tmp_path):
    lock = tmp_path / "run" / ".lock"
    with exclusive(lock, "the training run in run/"):
        with pytest.raises(LockError, match=rf"the training run in run/ is in use by process {os.getpid()}"):
            with exclusive(lock, "the training run in run/"):
                pass
    with exclusive(lock, "again"):  # released when the block ends
        pass


# ---- 4. images that would exhaust memory are refused before decoding -------------------------------


def test_header_sizes_of_every_format():
    img = cv2.imread(str(sample_paths()[0]))[:37, :53]
    for ext, params in [(".png", []), (".jpg", []), (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])]:
        assert image_size(cv2.imencode(ext, img, params)[1].tobytes()) == (53, 37), ext
    for ext in (".bmp", ".tif", ".ppm"):
        assert image_size(cv2.imencode(ext, img)[1]) == (53, 37), ext
    assert image_size(cv2.imencode(".pgm", img[..., 0])[1]) == (53, 37)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    app = b"\xff\xe1" + struct.pack(">H", 60002) + bytes(60000)  # large metadata before the frame header
    assert image_size(jpeg[:2] + app * 3 + jpeg[2:]) == (53, 37)
    assert image_size(b"not an image") is None and image_size(png(7, 9)[:20]) is None


def test_huge_images_are_refused_from_their_header_and_logged(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    shutil.copy(sample_paths()[2], src / "fine.png")
    (src / "bomb.png").write_bytes(png(100_000, 100_000))  # 10 gigapixels in 100 bytes
    # A real, fully decodable 4000 x 3000 gray PNG (12 MP in 12 KB), over a 10 MP limit.
    real = png(4000, 3000, gray=True, pixels=(b"\0" + bytes(4000)) * 3000)
    (src / "large.png").write_bytes(real)
    assert decode_image(real, "large.png", max_pixels=None).shape == (3000, 4000, 3)  # really decodable
    out = tmp_path / "out"
    summary = build(
        BuildOptions(src=str(src), out=out, embed=False, workers=1, crop_size=64, max_pixels=10_000_000),
        progress=False,
    )
    assert (summary.images, summary.samples, summary.errors) == (3, 1, 2)
    errors = {e["image"]: e["reason"] for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert "100000x100000" in errors["bomb.png"] and "decode limit of 10 megapixels" in errors["bomb.png"]
    assert "4000x3000" in errors["large.png"]
    # Past OpenCV's own limit (1 gigapixel) with ours off: an ImageError, never a cv2.error.
    with pytest.raises(ImageError, match="bomb.png: not a readable image"):
        decode_image(png(40_000, 40_000), "bomb.png", max_pixels=None)
    with pytest.raises(ImageError, match="over the decode limit of 100 megapixels"):
        check_image_size(png(10_001, 10_000))
    assert read_image_size(src / "bomb.png") == (100_000, 100_000)  # for callers with their own limit
    line = one_error_line(cli("degrade", str(src / "bomb.png"), "-o", str(tmp_path / "lr.png")))
    assert "bomb.png: 100000x100000" in line and "--max-pixels" in line
    assert not (tmp_path / "lr.png").exists()


# ---- 5. odd file names, links and key collisions ---------------------------------------------------


def test_odd_names_links_and_colliding_keys(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    png = encode_png(read_image(sample_paths()[2])[:64, :64])
    undecodable = os.fsdecode(b"caf\xe9.png")  # Latin-1 name: not UTF-8
    for name in ("plain.png", "a.b.png", "a_b.png", undecodable):
        (src / name).write_bytes(png)
    os.symlink("loop.png", src / "loop.png")  # a link to itself
    out = tmp_path / "out"
    summary = build(BuildOptions(src=str(src), out=out, embed=False, workers=1, crop_size=32), progress=False)
    assert (summary.images, summary.samples, summary.errors) == (5, 4, 1)
    (error,) = map(json.loads, (out / "errors.jsonl").read_text().splitlines())
    assert error["image"] == "loop.png" and "symbolic links" in error["reason"]
    by_image = {s.meta["image"]: s.key for s in open_shards(out, mode="eval")}
    # Valid names that collide with nothing keep the key (and seed) they always had.
    assert by_image["plain.png"] == "plain_png_c0"
    old_hash = int.from_bytes(hashlib.blake2b(b"plain.png", digest_size=8).digest(), "big") >> 1
    assert stable_hash("plain.png") == old_hash
    assert by_image["a.b.png"] != by_image["a_b.png"] and by_image["a.b.png"].startswith("a_b_png_")
    assert by_image["caf\\xe9.png"] == "caf__png_c0"  # the undecodable name, shown escaped, keyed stably
    assert stable_hash(undecodable) == stable_hash(os.fsdecode(b"caf\xe9.png"))
    # Resuming a complete build keeps every byte.
    before = tree(out)
    build(BuildOptions(src=str(src), out=out, embed=False, workers=1, crop_size=32, resume=True), progress=False)
    assert {k: v for k, v in tree(out).items() if k.endswith(".tar")} == {
        k: v for k, v in before.items() if k.endswith(".tar")
    }
    r = subprocess.run([EXE, "degrade", os.fsencode(src / undecodable), "-o", str(tmp_path / "lr.png")], env=ENV)
    assert r.returncode == 0 and (tmp_path / "lr.png").exists()
    # Keys that still coincide after the collision suffix are refused, naming both files.
    third = f"a_b_png_{stable_hash('a.b.png') & 0xFFFFFF:06x}"
    with pytest.raises(BuildError, match=rf"'a.b.png' and '{third}' would get the same shard key"):
        _unique_keys(["a.b.png", "a_b.png", third])


# ---- 7. a damaged shard is never counted complete --------------------------------------------------


def _member_offsets(shard: Path) -> list[tuple[str, int]]:
    with tarfile.open(shard) as tar:
        return [(m.name, m.offset) for m in tar]


def test_shards_cut_at_a_member_boundary_are_rebuilt_on_resume(small_build, tmp_path):
    out = tmp_path / "train"
    shutil.copytree(small_build, out)
    full = tree(small_build)
    # The middle shard loses its last whole sample: a valid tar of 3 samples instead of 4.
    middle = out / "train-000001.tar"
    members = _member_offsets(middle)
    last_key = members[-1][0].split(".")[0]
    os.truncate(middle, next(off for name, off in members if name.startswith(last_key + ".")))
    # The last shard loses the last member of its last sample.
    final = out / "train-000002.tar"
    os.truncate(final, _member_offsets(final)[-1][1])
    with tarfile.open(middle) as tar:
        assert len(tar.getmembers()) == len(members) - 4  # really cut, and still a readable tar
    notes: list[str] = []
    build(BuildOptions(out=out, resume=True, **SMALL), progress=False, log=notes.append)
    assert any("train-000001.tar is damaged (3 of 4 samples)" in n for n in notes), notes
    assert {k: v for k, v in tree(out).items() if k.endswith(".tar")} == {
        k: v for k, v in full.items() if k.endswith(".tar")
    }
    os.truncate(final, _member_offsets(final)[-1][1])
    notes.clear()
    build(BuildOptions(out=out, resume=True, **SMALL), progress=False, log=notes.append)
    assert any("train-000002.tar is damaged" in n for n in notes), notes
    assert (out / "train-000002.tar").read_bytes() == full["train-000002.tar"]


# ---- 8. values that would exhaust memory or unpickle are refused where they enter ------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_wide_kernels_and_object_embeddings_are_refused(small_build, tmp_path):
    cfg = tmp_path / "wide.yaml"
    cfg.write_text("blur:\n  kernel_sizes: [7, 200001]\n")
    line = one_error_line(cli("config", "--check", str(cfg)))
    assert "blur.kernel_sizes" in line and "at most 101" in line and "wide.yaml" in line
    with pytest.raises(ConfigError, match="resize1.factor"):
        BuildOptions(src="sample", out=tmp_path).config.from_dict({"resize1": {"factor": [0.5, 100.0]}})
    marker = tmp_path / "PWNED"
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(marker)
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)  # a real pickle that would run `touch`
    with tarfile.open(small_build / "train-000000.tar") as tar:
        first = [m for m in tar][:4]
        raw = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in first}
    key = first[0].name.split(".")[0]
    raw.update({"__key__": key, "__url__": "crafted.tar", "emb.npy": buf.getvalue()})
    with pytest.raises(SrDegradeError, match=rf"crafted.tar sample {key} emb.npy: .*object array"):
        decode_sample(raw)
    raw["emb.npy"] = b"\x93NUMPY garbage"
    with pytest.raises(SrDegradeError, match=rf"crafted.tar sample {key} emb.npy"):
        decode_sample(raw)
    raw.pop("emb.npy")
    raw["json"] = json.dumps({"params": {"order": ["blur", "resize2"], "blur": {}}}).encode()
    with pytest.raises(SrDegradeError, match=rf"crafted.tar sample {key}"):
        decode_sample(raw)
    assert not marker.exists()


# ---- 9. terminal safety of inspect -----------------------------------------------------------------


def test_inspect_never_passes_escapes_or_stats_outside_the_folder(small_build, tmp_path):
    folder = tmp_path / "crafted"
    shutil.copytree(small_build, folder)
    outside = tmp_path / "secret.bin"
    with open(outside, "wb") as f:
        f.truncate(50_000_000)  # sparse: 50 MB the report must not count
    rows = read_index(folder)
    rows[0].update(prompt="\x1b]0;owned\x07\x1b[2Jheavy blur\r\nfake line", shard=str(outside))
    rows[1].update(shard="../secret.bin", image="\x1b[31mred.png")
    _write_index(folder / "index.parquet", rows)
    info = json.loads((folder / "build.json").read_text())
    info["source"] = "folder \x1b[5mblink"
    (folder / "build.json").write_text(json.dumps(info))
    report = inspect_build(folder)
    own = sum(p.stat().st_size for p in folder.glob("*.tar"))
    assert report["bytes"] <= own
    r = cli("inspect", str(folder))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\r" not in r.stdout
    assert "\\x1b]0;owned\\x07" in r.stdout and "fake line" in r.stdout
    assert "\x1b" not in format_inspection(report)
    assert "\x1b" not in cli("inspect", str(folder), "--json").stdout


# ---- 11-13. one line for every message, fast refusals, words that match ----------------------------


def test_warnings_are_one_line_and_refusals_load_no_heavy_library(small_build):
    r = cli("describe", "--free-text", "heavy blur, sparkles")
    assert r.returncode == 0 and r.stderr.strip().splitlines() == [
        "warning: prompt phrases outside the vocabulary kept as free text: ['sparkles']"
    ]
    # A build refused over an existing output never loads the text encoder (torch, transformers).
    code = (
        "import sys\nfrom sr_degrade.cli import app\n"
        f"print(app(['build', '--src', 'sample', '--out', {str(small_build)!r}], standalone_mode=False))\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.stdout.splitlines() == ["2", "[]"], r.stdout + r.stderr
    assert "already holds a build" in r.stderr


def test_previews_spread_over_images_plurals_and_val_names(small_build, tmp_path):
    shown = _preview_samples(small_build, 4)
    assert len({s.meta["image"] for s in shown}) == 4  # 4 photos, not 2 crops of each of 2
    shard_of = {r["key"]: r["shard"] for r in read_index(small_build)}
    assert len({shard_of[s.key] for s in shown}) >= 2  # not only the first shard
    text = BuildSummary(images=1, samples=1, shards=1, errors=1).text()
    assert text.startswith("1 image -> 1 sample in 1 shard (") and ", 1 error," in text
    src = tmp_path / "one"
    src.mkdir()
    shutil.copy(sample_paths()[2], src / "x.png")
    build(BuildOptions(src=str(src), out=tmp_path / "v", val=True, embed=False, workers=1), progress=False)
    assert [p.name for p in (tmp_path / "v").glob("*.tar")] == ["val-000000.tar"]
