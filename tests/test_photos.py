"""make photos (tools/photos.sh): Debian's mate-backgrounds nature photographs fetched and unpacked without
installing anything, the bundled photos beside them, and the split by photo that the recipes use."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sr_degrade.sources import open_source

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "photos.sh"


def test_without_apt_it_says_so_in_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mktemp", "rm"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    r = subprocess.run(["/bin/bash", str(SCRIPT), str(tmp_path / "p")], capture_output=True, text=True,
                       env={"PATH": str(bin_dir)})  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "needs apt-get" in r.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="no apt-get on this machine (not Debian or Ubuntu)")
def test_photos_are_fetched_unpacked_and_split_by_photo(tmp_path):
    out = tmp_path / "photos"
    r = subprocess.run([str(SCRIPT), str(out)], capture_output=True, text=True, env=os.environ)
    if r.returncode == 2 and "Unable to locate package" in r.stderr:
        pytest.skip(f"apt has no package lists here (apt-get update not run): {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert len(list((out / "mate").glob("*.jpg"))) == 12
    assert "GPL-2+" in (out / "mate" / "COPYRIGHT").read_text()
    splits = {name: (out / f"{name}.txt").read_text().split() for name in ("train", "select", "report")}
    assert [len(v) for v in splits.values()] == [12, 3, 3]
    every = [p for v in splits.values() for p in v]
    assert len(set(every)) == 18  # no photo in two splits; every one of the 18 photos in one
    assert {Path(p).name for p in splits["select"]} >= {"coffee.png", "hubble_deep_field.jpg"}  # the demo's pair
    assert len(open_source(str(out / "train.txt")).images) == 12  # a source for sr-degrade build and data.photos
    again = subprocess.run([str(SCRIPT), str(out)], capture_output=True, text=True)
    assert again.returncode == 0 and "is complete" in again.stdout
