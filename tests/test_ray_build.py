"""The Ray engine (`sr-degrade build --engine ray`) against a real local Ray: the same bytes as the local
build (shards, index, errors), also when an image's header passes but its pixels do not decode (the plan is
redone from it), and after a build killed half-way (`--resume` keeps the complete shards, rebuilds the
rest); a cluster address nothing answers on is one error line, at once."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sr_degrade.build import BuildOptions, build
from sr_degrade.imageio import encode_png, write_image

ray = pytest.importorskip("ray", reason="the Ray engine's tests need ray (pip install 'sr-degrade[ray]')")

FILES = ("index.parquet", "errors.jsonl")


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray of 2 CPUs for the module (the engine uses a Ray this process already holds)."""
    os.environ.setdefault("RAY_worker_niceness", "0")  # as the engine's own local Ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Five small photos, one of them a PNG whose header is whole and whose pixels are cut off (the scan
    cannot see it), and one too small for the crop (the scan sees it)."""
    from conftest import photo_crop

    folder = tmp_path_factory.mktemp("ray_photos")
    for i, (name, y, x) in enumerate([("astronaut", 0, 0), ("coffee", 40, 100), ("chelsea", 20, 60)]):
        write_image(folder / f"p{i}.png", photo_crop(name, y, x, 160, 176))
    write_image(folder / "p3_small.png", photo_crop("rocket", 0, 0, 64, 64))
    data = encode_png(photo_crop("astronaut", 200, 200, 160, 160))
    (folder / "p1b_cut.png").write_bytes(data[: len(data) // 3])
    return folder


def options(src: Path, out: Path, **kw) -> BuildOptions:
    base = dict(src=str(src), out=out, crop_size=96, crops_per_image=3, shard_size=4, text_encoder="minilm", workers=2)
    return BuildOptions(**{**base, **kw})


def same_build(a: Path, b: Path) -> None:
    shards = sorted(p.name for p in a.glob("*.tar"))
    assert shards and shards == sorted(p.name for p in b.glob("*.tar"))
    for name in (*shards, *FILES):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_ray_build_gives_the_local_bytes_and_resumes_after_a_kill(local_ray, photos, tmp_path):
    local = tmp_path / "local"
    summary = build(options(photos, local), progress=False)
    errors = [json.loads(line) for line in (local / "errors.jsonl").read_text().splitlines()]
    assert {Path(e["path"]).name for e in errors} == {"p1b_cut.png", "p3_small.png"}
    assert summary.samples == 9 and summary.shards == 3  # 3 photos x 3 crops, shards of 4

    on_ray = tmp_path / "ray"
    logged: list[str] = []
    summary = build(options(photos, on_ray, engine="ray"), progress=False, log=logged.append)
    assert summary.samples == 9 and summary.errors == 2
    assert any("did not decode" in m for m in logged), logged  # the cut PNG was found by its task
    same_build(local, on_ray)

    # A driver killed half-way: build.json says running, no index, a shard missing, one half-written.
    info = json.loads((on_ray / "build.json").read_text())
    (on_ray / "build.json").write_text(json.dumps({**info, "status": "running"}))
    (on_ray / "index.parquet").unlink()
    (on_ray / "train-000001.tar").rename(on_ray / "train-000001.tar.tmp")
    kept = (on_ray / "train-000000.tar").stat().st_mtime_ns
    logged.clear()
    summary = build(options(photos, on_ray, engine="ray", resume=True), progress=False, log=logged.append)
    assert summary.resumed_from == 2, logged
    assert (on_ray / "train-000000.tar").stat().st_mtime_ns == kept  # kept, not rewritten
    assert not list(on_ray.glob("*.tmp"))
    same_build(local, on_ray)


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (a crash of the machine's share of a build)."""
    import signal

    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)


def test_a_driver_killed_with_sigkill_mid_build_resumes_from_its_complete_shards(local_ray, tmp_path):
    """A real `kill -9` of the driver and its Ray while a shard task waits on its photo (served over HTTP
    and held by the server, so the build cannot end first); `--resume` then keeps every shard that was
    complete and gives the bytes of an uninterrupted local build."""
    import signal
    import time

    from conftest import photo_crop
    from s3server import GatedHttp

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "rocket"]):
        write_image(folder / f"p{i}.png", photo_crop(name, 10 * i, 20 * i, 112, 112))
    common = dict(crop_size=96, crops_per_image=3, shard_size=2, embed=False, workers=1)
    server = GatedHttp(folder, "p3.png")
    local = tmp_path / "local"  # the same source URL: samples record where they come from
    build(BuildOptions(src=f"{server.url}/", out=local, **common), progress=False)  # 12 samples, 6 shards

    server.hold(free=1)  # shards 4 and 5 need p3: its read after the scan's is held
    out = tmp_path / "ray"
    cli = [str(Path(sys.executable).parent / "sr-degrade"), "build", "--src", f"{server.url}/", "--out", str(out),
           "--engine", "ray", "--workers", "1", "--crop-size", "96", "--crops-per-image", "3", "--shard-size", "2",
           "--no-embed"]  # fmt: skip
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (server.waiting and (out / "train-000000.tar").exists()):
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            assert time.monotonic() < deadline, "the build never reached its held photo"
            time.sleep(0.05)
        kill_session(proc.pid)  # the driver and its Ray: Ray's workers run in process groups of their own
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert json.loads((out / "build.json").read_text())["status"] == "running"
        assert not (out / "index.parquet").exists()
        done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
        assert "train-000000.tar" in done and "train-000005.tar" not in done
    finally:
        kill_session(proc.pid)
        server.release()
    try:
        summary = build(
            BuildOptions(src=f"{server.url}/", out=out, engine="ray", resume=True, **common), progress=False
        )
    finally:
        server.stop()
    assert summary.resumed_from == len(done) and summary.samples == 12
    assert all((out / name).stat().st_mtime_ns == t for name, t in done.items())  # kept, not rewritten
    same_build(local, out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_bad_addresses_are_one_line(tmp_path):
    out = tmp_path / "never"
    cli = [str(Path(sys.executable).parent / "sr-degrade"), "build", "--src", "sample", "--out", str(out), "--no-embed"]
    addr = f"127.0.0.1:{free_port()}"
    for extra, expected in (
        (["--engine", "ray", "--address", addr], f"--address {addr}: no Ray cluster answers there"),
        (["--address", addr], "--address names a Ray cluster: it needs --engine ray"),
        (["--engine", "spark"], "--engine 'spark': use 'local'"),
    ):
        r = subprocess.run(cli + extra, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
        assert not out.exists()  # nothing written


def test_plan_puts_each_sample_where_the_local_build_does(tmp_path):
    """Sample i of the images that give samples lands in shard i // shard_size, crops split across shards."""
    from types import SimpleNamespace

    from sr_degrade.ray_build import plan_shards
    from sr_degrade.shard_writer import Output, ShardNames

    images = [SimpleNamespace(key=f"k{i}", path=f"/x/k{i}.png") for i in range(4)]
    stems = {im.key: im.key for im in images}
    specs = plan_shards(images, stems, {1}, crops=3, shard_size=4, names=ShardNames(Output(tmp_path), "", "train"))
    keys = [k for s in specs for k in s.keys]
    assert keys == [f"k{i}_c{c}" for i in (0, 2, 3) for c in range(3)]
    assert [len(s.keys) for s in specs] == [4, 4, 1]
    assert specs[1].items == ((2, "k2", "/x/k2.png", 1, 3), (3, "k3", "/x/k3.png", 0, 2))
    assert np.unique([s.name for s in specs]).size == 3


def test_a_build_writes_to_s3_the_bytes_it_writes_to_disk_and_resumes_there(s3, photos, tmp_path):
    """--out s3://...: shards, index and errors as on disk (uploaded whole when complete); --resume there
    keeps the complete shards and rebuilds a missing one."""
    from s3server import BUCKET

    from sr_degrade import storage

    url = f"s3://{BUCKET}/built/train"
    opts = {"embed": False, "workers": 1}
    build(options(photos, tmp_path / "disk", **opts), progress=False)
    summary = build(options(photos, url, **opts), progress=False)
    assert summary.shards == 3 and summary.bytes == sum(p.stat().st_size for p in (tmp_path / "disk").glob("*.tar"))

    def same() -> None:
        names = sorted(p.name for p in (tmp_path / "disk").glob("*.tar")) + list(FILES)
        assert [u.rsplit("/", 1)[-1] for u in storage.listdir(url, "*.tar")] == names[:3]
        for name in names:
            assert storage.read_bytes(f"{url}/{name}") == (tmp_path / "disk" / name).read_bytes(), name

    same()
    storage.remove(f"{url}/train-000002.tar")
    storage.remove(f"{url}/index.parquet")
    summary = build(options(photos, url, resume=True, **opts), progress=False)
    assert summary.resumed_from == 2
    same()
    with pytest.raises(Exception, match="already holds a build"):
        build(options(photos, url, **opts), progress=False)
