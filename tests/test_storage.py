"""Shards, their index and build.json, and source photos read from object storage: a real S3-compatible
server (rclone serve s3) and a plain HTTP server on loopback, both started here. What is read from a URL
must be exactly what is read from the same files on local disk; every bad input (a missing bucket, wrong
credentials, an unreachable endpoint, a URL folder without build.json) is one `error:` line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from s3server import BUCKET, free_port, start_http
from typer.testing import CliRunner

from sr_degrade import storage
from sr_degrade.build import BuildOptions, build
from sr_degrade.cli import app as sr_degrade_app
from sr_degrade.errors import SrDegradeError
from sr_degrade.report import inspect_build, preview_build
from sr_degrade.shards import open_shards, read_build_info, read_index, shard_files

ROOT = f"s3://{BUCKET}"


@pytest.fixture(scope="module")
def http_server(val_shards):
    """python -m http.server over the folder holding the session's evaluation shards."""
    server = start_http(val_shards.parent)
    yield server
    server.stop()


def samples(pattern) -> list[tuple[str, bytes, str]]:
    return [(s.key, s.hr.tobytes(), s.prompt) for s in open_shards(pattern, mode="eval")]


def one_error(result) -> str:
    """The CLI's error contract: exit 2 and exactly one `error:` line, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (result.exit_code, lines)
    return lines[0]


def test_storage_round_trip_on_s3_and_local(s3, tmp_path):
    for base in (f"{ROOT}/rt", str(tmp_path / "rt")):
        storage.write_bytes(storage.join(base, "a.bin"), b"first")
        storage.write_bytes(storage.join(base, "a.bin"), b"second")  # replaced whole
        with storage.open_write(storage.join(base, "big.tar")) as f:
            f.write(b"x" * 100_000)
        with pytest.raises(RuntimeError), storage.open_write(storage.join(base, "half.tar")) as f:
            f.write(b"y" * 100)
            raise RuntimeError("the writer dies half-way")
        assert storage.read_bytes(storage.join(base, "a.bin")) == b"second"
        assert storage.listdir(base) == [storage.join(base, n) for n in ("a.bin", "big.tar")]  # nothing half-written
        assert storage.listdir(base, "*.tar") == [storage.join(base, "big.tar")]
        assert storage.listdir(storage.join(base, "nothing")) == []
        with storage.open_read(storage.join(base, "big.tar")) as f:
            assert f.read() == b"x" * 100_000
        storage.remove(storage.join(base, "a.bin"))
        storage.remove(storage.join(base, "a.bin"))  # already gone: fine
        assert not storage.exists(storage.join(base, "a.bin")) and storage.exists(storage.join(base, "big.tar"))
        with pytest.raises(storage.StorageError, match="a.bin"):
            storage.read_bytes(storage.join(base, "a.bin"))
    assert storage.is_url(ROOT) and storage.is_url("memory://x") and storage.is_url("https://h/x.tar")
    assert not any(storage.is_url(p) for p in ("file:///tmp/x", "pipe:cat x.tar", "/tmp/x", "C:\\x", tmp_path))


def test_shards_index_and_build_json_from_s3_and_http_are_the_local_ones(s3, val_shards, http_server):
    from promptsr.train_data import shard_build_info

    url = f"{ROOT}/val/"
    copied = storage.copy_folder(val_shards, url)
    assert {u.rsplit("/", 1)[1] for u in copied} >= {"build.json", "index.parquet", "val-000000.tar"}
    http = f"{http_server.url}/{val_shards.name}/"
    local = samples(val_shards)
    assert len(local) == 3
    for remote in (url, http):
        assert samples(remote) == local, remote
        assert read_index(remote) == read_index(val_shards)
        assert shard_build_info(remote) == shard_build_info(str(val_shards)) == read_build_info(val_shards)
        assert {**inspect_build(remote), "folder": ""} == {**inspect_build(val_shards), "folder": ""}
    assert np.array_equal(preview_build(url, 2), preview_build(val_shards, 2))  # `sr-degrade preview` of a URL
    r = CliRunner().invoke(sr_degrade_app, ["inspect", url])
    assert r.exit_code == 0 and f"{url}: complete build" in r.stdout and "3 samples" in r.stdout, r.output
    assert shard_files(url) == [f"{ROOT}/val/val-000000.tar"]
    assert shard_files(f"{ROOT}/val/val-*.tar") == shard_files(f"{ROOT}/val/val-{{000000..000000}}.tar")
    # Training streams resample shards from S3 too (the pipeline the trainer reads).
    first = next(iter(open_shards(url, crop=32, mode="train", shuffle=1)))
    assert first.hr.shape == (32, 32, 3) and first.key in {k for k, _, _ in local}


def test_promptsr_eval_reads_s3_shards(s3, model_dir, val_shards, tmp_path):
    from conftest import read_csv

    from promptsr.cli import app

    storage.copy_folder(val_shards, f"{ROOT}/tinyval/")
    argv = ["eval", "--model", str(model_dir), "--data", f"{ROOT}/tinyval/", "--metrics", "psnr,ssim"]
    fast = ["--steps", "1", "--tile", "64", "--overlap", "16", "--no-grids", "--no-save-images"]
    r = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "res"), *fast])
    assert r.exit_code == 0, r.output
    rows = read_csv(tmp_path / "res" / "per_image.csv")
    keys = [k for k, _, _ in samples(val_shards)]
    assert sorted((row["image"], row["method"]) for row in rows) == sorted(
        (k, m) for k in keys for m in ("bicubic", "promptsr")
    )
    assert "tinyval" in r.output  # the dataset is named after the URL's folder, as after a local one


def _photos(folder: Path) -> Path:
    from sr_degrade.imageio import write_image

    write_image(folder / "photos" / "coffee.png", photo("coffee")[100:164, 200:296])
    write_image(folder / "photos" / "sub" / "chelsea.png", photo("chelsea")[60:124, 150:214])
    (folder / "photos" / ".hidden.png").write_bytes((folder / "photos" / "coffee.png").read_bytes())
    return folder / "photos"


def test_a_build_from_s3_photos_writes_the_local_builds_bytes(s3, tmp_path):
    from sr_degrade.sources import open_source

    local = _photos(tmp_path / "local")
    for rel in ("coffee.png", "sub/chelsea.png", ".hidden.png"):
        storage.write_bytes(f"{ROOT}/photos/{rel}", (local / rel).read_bytes())
    source = open_source(f"{ROOT}/photos/")
    assert [(im.key, im.path) for im in source.images] == [
        ("coffee.png", f"{ROOT}/photos/coffee.png"),
        ("sub/chelsea.png", f"{ROOT}/photos/sub/chelsea.png"),
    ]
    assert [im.key for im in source.images] == [im.key for im in open_source(str(local)).images]
    opts = {"val": True, "embed": False, "workers": 1, "shard_size": 1}
    build(BuildOptions(src=f"{ROOT}/photos/", out=tmp_path / "from_s3", **opts), progress=False)
    build(BuildOptions(src=str(local), out=tmp_path / "from_disk", **opts), progress=False)
    shards = sorted(p.name for p in (tmp_path / "from_disk").glob("*.tar"))
    assert len(shards) == 2
    for name in shards:
        assert (tmp_path / "from_s3" / name).read_bytes() == (tmp_path / "from_disk" / name).read_bytes(), name
    assert read_index(tmp_path / "from_s3") == read_index(tmp_path / "from_disk")
    # The shards of a folder at a URL come back sorted, whatever order the server lists them in.
    storage.copy_folder(tmp_path / "from_s3", f"{ROOT}/built/")
    assert shard_files(f"{ROOT}/built") == [f"{ROOT}/built/{n}" for n in shards]
    assert samples(f"{ROOT}/built") == samples(tmp_path / "from_disk")


def test_bad_storage_inputs_get_one_error_line(s3, val_shards, tmp_path, monkeypatch, capsys):
    from promptsr.cli import app as promptsr_app
    from promptsr.train_cli import main as train_main

    runner = CliRunner()
    storage.copy_folder(val_shards, f"{ROOT}/val/")
    storage.copy_folder(val_shards, f"{ROOT}/bare/", "*.tar")  # the shards alone, without build.json

    def train(*overrides: str) -> str:
        capsys.readouterr()
        code = train_main([f"run.output_dir={tmp_path / 'run'}", *overrides])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (code, err)
        return err[0]

    # A missing bucket: sr-degrade build --src.
    out = tmp_path / "out"
    argv = ["build", "--src", "s3://no-such-bucket/photos/", "--out", str(out), "--no-embed"]
    r = runner.invoke(sr_degrade_app, argv)
    line = one_error(r)
    assert "s3://no-such-bucket/photos" in line and "bucket 'no-such-bucket' does not exist" in line
    assert not (out / "build.json").exists()
    # A URL folder without build.json: training refuses it before torch loads.
    line = train(f"data.train={ROOT}/bare/")
    assert f"{ROOT}/bare/build.json: not found" in line and "upload the whole build folder" in line
    with pytest.raises(SrDegradeError, match="build.json: not found"):
        read_build_info(f"{ROOT}/bare/")
    assert len(samples(f"{ROOT}/bare/")) == 3  # the samples themselves read fine without it
    # Wrong credentials.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    line = train(f"data.train={ROOT}/val/")
    assert f"{ROOT}/val" in line and "access denied" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert "not-the-secret" not in line  # credentials are never printed
    # An unreachable endpoint: promptsr eval.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.env["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would only make the test slower
    r = runner.invoke(promptsr_app, ["eval", "--model", str(tmp_path), "--data", f"{ROOT}/val/", "--out", str(out)])
    line = one_error(r)
    assert f"{ROOT}/val" in line and "cannot reach the endpoint http://127.0.0.1:" in line
    # An fsspec implementation that is not installed.
    with pytest.raises(storage.StorageError, match=r"gs://b/x: gs:// needs gcsfs"):
        storage.read_bytes("gs://b/x")


def test_a_datasets_default_name_is_its_folders_also_for_a_url():
    from promptsr.evaluate import dataset_label

    assert dataset_label("s3://bucket/sets/urban100/") == "urban100" and dataset_label(Path("/a/b")) == "b"
