"""The promptsr command line's contract: a bad argument is one `error:` line and exit 2, checked
before the heavy libraries load where it can be; an image too large for this machine's memory is
refused from its header, naming its size and the limit; eval checks the shards' scale first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_safety_data import png

from sr_degrade.imageio import write_image

EXE = str(Path(sys.executable).parent / "promptsr")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def promptsr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=ENV, timeout=300)


def one_error(r: subprocess.CompletedProcess) -> str:
    """The single error line of a refused command (exit 2, nothing else on stderr but notes)."""
    lines = [line for line in r.stderr.splitlines() if not line.startswith("note:")]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)
    assert "upscaled 0" not in r.stdout and " step " not in r.stderr
    return lines[0]


def loads_torch(*argv: str) -> tuple[int, bool]:
    """Exit code of `promptsr ARGV` run in-process, and whether torch was imported by then."""
    code = (
        "import sys\nfrom promptsr.cli import app\n"
        f"try:\n    app({list(argv)!r})\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, 'torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    rc, torch_loaded = r.stdout.split()[-2:]
    return int(rc), torch_loaded == "True"


def test_bad_arguments_are_one_line_and_exit_2(model_dir, tmp_path):
    lr = tmp_path / "lr.png"
    write_image(lr, np.zeros((16, 16, 3), np.uint8))
    base = ["upscale", str(lr), "-o", str(tmp_path / "sr.png"), "--model", str(model_dir), "--steps", "1"]
    assert "heavy blurr" in one_error(promptsr(*base, "-p", "heavy blurr, downsample"))
    assert "no such file" in one_error(promptsr("upscale", str(tmp_path / "nothing.png"), *base[2:]))
    assert "--overlap 64" in one_error(promptsr(*base, "--tile", "64", "--overlap", "64"))
    assert "--color-fix" in one_error(promptsr(*base, "--color-fix", "sepia"))
    assert not (tmp_path / "sr.png").exists()
    # Refused before torch loads.
    assert loads_torch(*base, "-p", "heavy blurr, downsample") == (2, False)
    assert loads_torch("info", "--preset", "huge") == (2, False)
    assert loads_torch("train", "optim.learnrate=1") == (2, False)
    assert loads_torch("train", f"data.train={tmp_path / 'no_shards'}") == (2, False)
    assert loads_torch("export", str(tmp_path / "no_run"), "-o", str(tmp_path / "m")) == (2, False)
    r = promptsr("-h")
    assert r.returncode == 0 and "upscale" in r.stdout and "eval" in r.stdout.split("Commands")[0]
    assert "promptsr-model[eval]" in promptsr("eval", "--help").stdout


def test_an_image_too_large_for_memory_is_refused_from_its_header(model_dir, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(60000, 60000))  # a few hundred bytes claiming 3.6 GP, 240000^2 at x4
    r = promptsr("upscale", str(bomb), "-o", str(tmp_path / "sr.png"), "--model", str(model_dir), "--steps", "1")
    line = one_error(r)
    assert "60000x60000" in line and "240000x240000" in line and "MP" in line and "GiB" in line


def test_eval_refuses_shards_of_another_scale_before_the_first_image(model_dir, val_shards, tmp_path):
    x2 = tmp_path / "x2"
    shutil.copytree(val_shards, x2)
    info = json.loads((x2 / "build.json").read_text())
    info["config"]["scale"] = 2
    (x2 / "build.json").write_text(json.dumps(info))
    r = promptsr("eval", "--model", str(model_dir), "--data", str(x2), "--metrics", "psnr", "--steps", "1",
                 "-o", str(tmp_path / "out"))  # fmt: skip
    assert "x2 shards" in one_error(r) and not (tmp_path / "out").exists()


def test_version_options_print_both_versions_and_exit_0():
    from promptsr import __version__ as ours
    from sr_degrade import __version__ as theirs

    r = promptsr("--version")
    assert (r.returncode, r.stdout.strip()) == (0, f"promptsr {ours} (sr-degrade {theirs})"), r.stderr
    assert promptsr("version").stdout == r.stdout
    r = subprocess.run([str(Path(EXE).parent / "sr-degrade"), "--version"], capture_output=True, text=True, env=ENV)
    assert (r.returncode, r.stdout.strip()) == (0, f"sr-degrade {theirs}")
