"""The sr-degrade command line, run as a user runs it: the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sr_degrade import DegradationParams, bins, degrade, parse_prompt, read_image
from sr_degrade.samples import sample_dir, sample_paths

EXE = str(Path(sys.executable).parent / "sr-degrade")
CHELSEA = str(sample_dir() / "chelsea.png")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_degrade_writes_the_lr_and_prints_the_prompt(tmp_path):
    r = cli("degrade", CHELSEA, "-o", str(tmp_path / "lr.png"), "--seed", "3")
    assert r.returncode == 0, r.stderr
    lr = read_image(tmp_path / "lr.png")
    assert lr.shape == (300 // 4, 451 // 4, 3)
    prompt = r.stdout.strip()
    assert prompt.endswith("downsample") and len(parse_prompt(prompt)) == 5


def test_json_output_is_only_json_and_reproduces_the_lr(tmp_path):
    r = cli("degrade", CHELSEA, "-o", str(tmp_path / "lr.png"), "--seed", "3", "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)  # nothing but JSON on stdout
    params = DegradationParams.from_dict(record["params"])
    assert record["bins"] == bins(params)
    assert parse_prompt(record["prompt"]) == record["bins"]
    assert record["hr_size"] == [451, 300] and record["hr_used"] == [448, 300] and record["lr_size"] == [112, 75]
    assert np.array_equal(read_image(tmp_path / "lr.png"), degrade(read_image(CHELSEA), params))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert cli("degrade", CHELSEA, "-o", str(tmp_path / f"{name}.png"), "--seed", seed).returncode == 0
    a, b, c = ((tmp_path / f"{n}.png").read_bytes() for n in "abc")
    assert a == b and a != c


def test_config_scale_and_format_apply(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("scale: 2\nshuffle_order: true\nnoise:\n  words: [little grain, some grain, much grain]\n")
    r = cli("degrade", CHELSEA, "-o", str(tmp_path / "lr.png"), "-c", str(cfg), "--format", "simplified", "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["lr_size"] == [225, 150] and record["format"] == "simplified"
    assert "grain" in record["prompt"] or "noise" not in record["prompt"]
    r = cli("degrade", CHELSEA, "-o", str(tmp_path / "lr3.png"), "--scale", "3")
    assert r.returncode == 0 and read_image(tmp_path / "lr3.png").shape == (100, 150, 3)


def test_describe_prints_the_levels():
    r = cli("describe", "[Heavy blur, up-sample, medium noise, medium compression, downsample]")
    assert r.returncode == 0, r.stderr
    rows = dict(line.split(maxsplit=1) for line in r.stdout.strip().splitlines())
    assert rows == {
        "blur": "heavy",
        "resize1": "upsample",
        "noise": "medium",
        "jpeg": "medium",
        "resize2": "downsample",
    }
    r = cli("describe", "light noise, sharp please", "--free-text", "--json")
    assert json.loads(r.stdout) == {"levels": {"noise": "light"}, "free_text": ["sharp please"]}


def test_config_command_prints_a_loadable_default(tmp_path):
    r = cli("config")
    assert r.returncode == 0
    (tmp_path / "c.yaml").write_text(r.stdout)
    assert cli("config", "--check", str(tmp_path / "c.yaml")).stdout == r.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("describe", "blurry, downsample"), "unknown phrase 'blurry'"),
        (("degrade", "missing.png", "-o", "x.png"), "missing.png"),
        (("degrade", CHELSEA, "-o", "x.png", "--format", "haiku"), "unknown --format 'haiku'"),
        (("degrade", CHELSEA, "-o", "x.png", "--scale", "0"), "'scale'"),
        (("config", "--check", "bad.yaml"), "unknown config key 'blur.sigmaa'"),
        (("degrade", "tiny.png", "-o", "x.png"), "smaller than the scale"),
        (("degrade", "notes.jpg", "-o", "x.png"), "not a readable image"),
    ],
)
def test_bad_input_exits_nonzero_with_one_message_and_no_traceback(tmp_path, args, needle):
    (tmp_path / "bad.yaml").write_text("blur:\n  sigmaa: [1, 2]\n")
    (tmp_path / "notes.jpg").write_text("not an image")
    from sr_degrade import write_image

    write_image(tmp_path / "tiny.png", np.zeros((3, 3, 3), np.uint8))
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert needle in r.stderr and r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("command", ["", "degrade", "describe", "config", "vocab", "demo"])
def test_every_help_reads_well(command):
    r = cli(*([command] if command else []), "--help")
    assert r.returncode == 0
    assert "Usage: sr-degrade" in r.stdout
    if command:
        assert len(r.stdout) > 200
    else:
        for sub in ("degrade", "describe", "config", "vocab", "demo"):
            assert sub in r.stdout


def test_demo_degrades_every_bundled_photo(tmp_path):
    r = cli("demo", "--out", str(tmp_path / "demo"), "--seed", "1")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in (tmp_path / "demo" / "prompts.jsonl").read_text().splitlines()]
    assert [rec["image"] for rec in records] == [p.name for p in sample_paths()]
    for rec, path in zip(records, sample_paths()):
        hr = read_image(path)
        lr = read_image(tmp_path / "demo" / rec["lr"])
        params = DegradationParams.from_dict(rec["params"])
        assert np.array_equal(lr, degrade(hr, params))
        assert parse_prompt(rec["prompt"]) == bins(params)
        assert (tmp_path / "demo" / "lr" / f"{path.stem}.txt").read_text().strip() == rec["prompt"]
    sheet = read_image(tmp_path / "demo" / "contact_sheet.png")
    assert sheet.shape[0] >= 256 * len(records) and sheet.std() > 20
