"""Evaluation and ablations: CSV, summary tables, grids, LR-only sets, missing metrics, bad input (via the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_csv

from promptsr.bicubic import bicubic_upsample
from promptsr.metrics import psnr_y, ssim_y
from sr_degrade import read_image
from sr_degrade.imageio import write_image
from sr_degrade.samples import load_sample
from sr_degrade.shards import open_shards

EXE = str(Path(sys.executable).parent / "promptsr")
FAST = ["--steps", "2", "--tile", "64", "--overlap", "16"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def evaluated(model_dir, val_shards, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("eval") / "res"
    r = cli("eval", "--model", str(model_dir), "--data", str(val_shards), "--metrics", "psnr,ssim,lpips",
            "--out", str(out), *FAST)  # fmt: skip
    return out, r


def test_eval_writes_rows_for_both_methods_with_our_psnr(evaluated, val_shards):
    out, r = evaluated
    assert r.returncode == 0, r.stderr
    rows = read_csv(out / "per_image.csv")
    samples = {s.key: s for s in open_shards(val_shards, mode="eval")}
    assert len(samples) == 3 and len(rows) == 6
    assert {(row["image"], row["method"]) for row in rows} == {(k, m) for k in samples for m in ("promptsr", "bicubic")}
    for row in rows:
        s = samples[row["image"]]
        saved = read_image(out / "images" / row["method"] / "tinyval" / f"{row['image']}.png")
        assert saved.shape == s.hr.shape
        assert float(row["psnr"]) == pytest.approx(psnr_y(saved, s.hr, 4), abs=1e-5)
        assert float(row["ssim"]) == pytest.approx(ssim_y(saved, s.hr, 4), abs=1e-5)
        assert row["prompt"] == (s.prompt if row["method"] == "promptsr" else row["prompt"])
    # The bicubic row is the project's bicubic rounded to uint8, not the model's output.
    s = next(iter(samples.values()))
    lr = torch.from_numpy(s.lr).permute(2, 0, 1)[None].float() / 255
    expect = (bicubic_upsample(lr, 4, 0.0, 1.0)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(read_image(out / "images" / "bicubic" / "tinyval" / f"{s.key}.png"), expect)


def test_summary_table_json_and_grids(evaluated):
    out, _ = evaluated
    md = (out / "summary.md").read_text()
    assert "### tinyval (3 images)" in md and "| Bicubic |" in md and "| PromptSR |" in md
    assert "PSNR ↑" in md and "SSIM ↑" in md
    summary = json.loads((out / "summary.json").read_text())
    means = summary["datasets"]["tinyval"]["means"]
    rows = read_csv(out / "per_image.csv")
    ours = [float(r["psnr"]) for r in rows if r["method"] == "promptsr"]
    assert means["promptsr"]["psnr"] == pytest.approx(np.mean(ours), abs=1e-5)
    assert set(means) == {"bicubic", "promptsr"} and summary["options"]["steps"] == 2
    grids = sorted((out / "grids" / "tinyval").glob("*.png"))
    assert len(grids) == 3 and read_image(grids[0]).shape[1] == 4 * 192 + 320  # LR | bicubic | ours | HR, caption


def test_missing_pyiqa_skips_that_metric_with_the_fix_and_keeps_the_others(evaluated):
    out, r = evaluated
    pytest.importorskip("pytest")  # pyiqa must NOT be importable in the test install
    with pytest.raises(ImportError):
        import pyiqa  # noqa: F401
    assert "note: lpips: skipped: pyiqa is not installed" in r.stderr and "promptsr-model[eval]" in r.stderr
    header = read_csv(out / "per_image.csv")[0]
    assert "lpips" not in header and header["psnr"] and header["ssim"]
    assert "lpips" in json.loads((out / "summary.json").read_text())["notes"][0]


def test_lr_folder_with_prompts_csv_no_reference_only(model_dir, tmp_path):
    lr = tmp_path / "real"
    lr.mkdir()
    write_image(lr / "a.png", load_sample("coffee")[::8, ::8][:16, :24])
    write_image(lr / "b.png", load_sample("chelsea")[::8, ::8][:16, :16])
    (lr / "broken.png").write_bytes(b"not an image")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text('image,prompt\na.png,"light noise, downsample"\n')
    out = tmp_path / "res"
    r = cli("eval", "--model", str(model_dir), "--lr-folder", str(lr), "--prompts", str(prompts),
            "--metrics", "psnr,nima", "--out", str(out), *FAST)  # fmt: skip
    assert r.returncode == 1, r.stderr  # the broken image is reported at the end, the others evaluated
    assert "psnr: skipped: a full-reference metric needs the HR" in r.stderr
    assert "1 image(s) failed" in r.stderr and "broken.png" in r.stderr.split("failed:")[-1]
    rows = read_csv(out / "per_image.csv")
    assert {(row["image"], row["method"], row["prompt"]) for row in rows} == {
        ("a", "promptsr", "light noise, downsample"), ("a", "bicubic", "light noise, downsample"),
        ("b", "promptsr", ""), ("b", "bicubic", ""),
    }  # fmt: skip
    assert read_image(out / "images" / "promptsr" / "real" / "a.png").shape == (64, 96, 3)
    assert read_image(out / "grids" / "real" / "b.png").shape[1] == 3 * 192 + 320  # LR | bicubic | ours: no HR


def test_free_text_prompts_are_read_as_upscale_reads_them(model_dir, tmp_path):
    lr = tmp_path / "real"
    lr.mkdir()
    write_image(lr / "a.png", load_sample("coffee")[::8, ::8][:16, :16])
    prompts = tmp_path / "prompts.csv"
    prompts.write_text('image,prompt\na.png,"very blurry, purple tint"\n')
    out = tmp_path / "res"
    args = ["eval", "--model", str(model_dir), "--lr-folder", str(lr), "--prompts", str(prompts)]
    r = cli(*args, "--metrics", "nima", "--out", str(out), *FAST)
    assert r.returncode == 1 and "very blurry" in r.stderr  # outside the vocabulary: that image fails
    r = cli(*args, "--metrics", "nima", "--out", str(out), "--free-text", *FAST)
    assert r.returncode == 0, r.stderr
    assert {row["prompt"] for row in read_csv(out / "per_image.csv")} == {"heavy blur, downsample"}
    summary = (out / "summary.md").read_text()
    assert "understood as: heavy blur, downsample" in summary and "not understood: purple, tint" in summary


def test_prompt_and_format_ablations_write_one_row_per_setting(model_dir, val_shards, tmp_path):
    out = tmp_path / "t1"
    r = cli("ablate", "prompt", "--model", str(model_dir), "--data", str(val_shards), "--metrics", "psnr",
            "--limit", "1", "--out", str(out), *FAST)  # fmt: skip
    assert r.returncode == 0, r.stderr
    table = json.loads((out / "ablation_prompt.json").read_text())["datasets"]["tinyval"]
    assert list(table["rows"]) == ["Bicubic", "with prompt", "without prompt"] and table["images"] == 1
    assert table["rows"]["with prompt"]["psnr"] != table["rows"]["without prompt"]["psnr"]
    assert "| without prompt |" in (out / "ablation_prompt.md").read_text()
    empty = read_csv(out / "without_prompt" / "per_image.csv")
    assert {row["prompt"] for row in empty} == {""}

    out = tmp_path / "t3b"
    r = cli("ablate", "format", "--model", str(model_dir), "--data", str(val_shards), "--metrics", "psnr,ssim",
            "--limit", "2", "--out", str(out), *FAST)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "ablation_format.json").read_text())["datasets"]["tinyval"]["rows"]
    assert list(rows) == ["Bicubic", "original", "shuffled", "simplified"]
    md = (out / "ablation_format.md").read_text()
    assert all(f"| {s} |" in md for s in ("original", "shuffled", "simplified")) and "SSIM ↑" in md
    original = {r["image"]: r["prompt"] for r in read_csv(out / "original" / "per_image.csv")}
    simplified = {r["image"]: r["prompt"] for r in read_csv(out / "simplified" / "per_image.csv")}
    assert all(len(simplified[k]) <= len(original[k]) for k in original) and simplified != original


def test_model_comparison_and_bad_input(model_dir, val_shards, tmp_path):
    out = tmp_path / "cmp"
    r = cli("ablate", "models", "--model", str(model_dir), "--model", str(model_dir), "--label", "two resizes",
            "--label", "same again", "--data", str(val_shards), "--metrics", "psnr", "--limit", "1",
            "--out", str(out), *FAST)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "ablation_models.json").read_text())["datasets"]["tinyval"]["rows"]
    assert list(rows) == ["Bicubic", "two resizes", "same again"]
    assert rows["two resizes"]["psnr"] == pytest.approx(rows["same again"]["psnr"])  # same weights, same seed

    r = cli("eval", "--model", str(model_dir), "--data", str(val_shards), "--metrics", "psnr,sharpness",
            "--out", str(tmp_path / "x"))  # fmt: skip
    assert r.returncode == 2 and "error: unknown metric 'sharpness'" in r.stderr
    assert "psnr, ssim, lpips, dists, stlpips, cnniqa, nima" in r.stderr and "Traceback" not in r.stderr
    r = cli("eval", "--model", str(tmp_path / "nowhere"), "--data", str(val_shards), "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "is not a PromptSR model folder" in r.stderr and "Traceback" not in r.stderr
    r = cli("eval", "--model", str(model_dir), "--data", str(tmp_path), "--out", str(tmp_path / "w"))
    assert r.returncode == 2 and "no shards found" in r.stderr
    assert not (tmp_path / "x").exists()  # nothing written before the input is checked


def test_an_ablation_loads_its_model_once_for_all_settings(model_dir, val_shards, tmp_path, monkeypatch):
    import promptsr.inference
    from promptsr.evaluate import EvalOptions, MetricSet, run_ablation, shard_items
    from promptsr.inference import Upscaler

    loads: list[Path] = []
    real = promptsr.inference.load_model

    def counting(folder, device="cpu"):
        loads.append(Path(folder))
        return real(folder, device=device)

    monkeypatch.setattr(promptsr.inference, "load_model", counting)
    opts = EvalOptions(steps=1, tile=64, overlap=16, grids=False, save_images=False)
    record, results = run_ablation(
        "prompt", {"promptsr": lambda: Upscaler(model_dir)}, lambda: {"tinyval": shard_items(val_shards, limit=1)},
        MetricSet(["psnr"]), tmp_path / "abl", opts, progress=False,
    )  # fmt: skip
    assert record["settings"] == ["with prompt", "without prompt"] and all(r.counts == {"tinyval": 1} for r in results)
    assert loads == [model_dir]  # two settings, one load
