"""Upscaling with prompts: shapes, determinism, prompts, tiling without seams, colour fix, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomized_tiny

from promptsr.diffusion import DiffusionConfig
from promptsr.export import load_model, write_model_folder
from promptsr.inference import Upscaler, color_fix, predict_tiled, tile_starts
from sr_degrade import DegradationConfig, PromptError, read_image
from sr_degrade.errors import SrDegradeError
from sr_degrade.imageio import write_image
from sr_degrade.samples import load_sample

EXE = str(Path(sys.executable).parent / "promptsr")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from sr_degrade.embed import load_text_encoder

    out = tmp_path_factory.mktemp("model") / "tiny"
    write_model_folder(out, randomized_tiny(), load_text_encoder("minilm"), DiffusionConfig(), DegradationConfig())
    return out


@pytest.fixture(scope="module")
def upscaler(model_dir) -> Upscaler:
    return Upscaler(model_dir)


@pytest.fixture(scope="module")
def lr_photo() -> np.ndarray:
    return np.ascontiguousarray(load_sample("coffee")[::4, ::4][:48, :64])  # a real 64 x 48 LR


def test_output_is_scale_times_the_input_and_reproducible(upscaler, lr_photo):
    a = upscaler.upscale(lr_photo, "light noise, downsample", steps=4, seed=1)
    assert a.shape == (192, 256, 3) and a.dtype == np.uint8
    assert np.array_equal(a, upscaler.upscale(lr_photo, "light noise, downsample", steps=4, seed=1))
    assert not np.array_equal(a, upscaler.upscale(lr_photo, "light noise, downsample", steps=4, seed=2))
    odd = upscaler.upscale(lr_photo[:13, :21], "", steps=2)  # padded to the model's multiple, cropped back
    assert odd.shape == (52, 84, 3)


def test_the_prompt_changes_the_result(upscaler, lr_photo):
    a = upscaler.upscale(lr_photo, "light noise, downsample", steps=4)
    b = upscaler.upscale(lr_photo, "heavy blur, downsample, heavy noise, heavy compression, downsample", steps=4)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5


def test_prompts_come_from_the_table_or_the_encoder_and_are_checked(upscaler, model_dir):
    model = load_model(model_dir)
    table_hit = upscaler.embed("[Light Noise, Downsample]")
    assert np.array_equal(table_hit, model.lookup("light noise, downsample"))
    with pytest.raises(PromptError, match="unknown phrase 'a sharp photo'"):
        upscaler.embed("a sharp photo, downsample")
    with pytest.warns(UserWarning):
        free = upscaler.embed("a sharp photo, downsample", free_text=True)  # not in the table: the encoder
    from sr_degrade.embed import load_text_encoder

    assert free.tobytes() == load_text_encoder("minilm").encode("a sharp photo, downsample").tobytes()


def test_one_tile_covering_the_image_equals_the_plain_model():
    net = randomized_tiny(1)
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 3, 64, 48, generator=g), torch.randn(1, 3, 64, 48, generator=g)
    emb, mask, t = torch.randn(1, 5, 384, generator=g), torch.ones(1, 5, dtype=torch.bool), torch.tensor([700])
    with torch.no_grad():
        tiled = predict_tiled(net, x, cond, t, emb, mask, tile=64, overlap=16, batch=2)
        plain = net(torch.cat([x, cond], 1), t, emb, mask)
    torch.testing.assert_close(tiled, plain, atol=1e-6, rtol=1e-6)


def _seams(img: torch.Tensor, tile: int, overlap: int) -> tuple[float, float]:
    """Mean |difference| between neighbouring columns at tile edges, and everywhere else."""
    img = img.float()  # uint8 differences would wrap around
    d = (img[..., 1:] - img[..., :-1]).abs().mean(dim=tuple(range(img.dim() - 1)))
    width = img.shape[-1]
    starts = tile_starts(width, tile, overlap)
    edges = sorted({s for s in starts if s > 0} | {s + tile for s in starts if s + tile < width})
    inside = torch.ones(d.shape[0], dtype=torch.bool)
    inside[[e - 1 for e in edges]] = False
    return float(d[[e - 1 for e in edges]].mean()), float(d[inside].mean())


def test_blended_tiles_leave_no_seam_where_hard_tiles_do():
    net = randomized_tiny(2)
    photo = torch.from_numpy(np.ascontiguousarray(load_sample("coffee")[:192, :256])).permute(2, 0, 1)[None]
    x = photo.float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    emb, mask, t = torch.randn(1, 10, 384, generator=g), torch.ones(1, 10, dtype=torch.bool), torch.tensor([800])
    with torch.no_grad():
        at_edge, inside = _seams(predict_tiled(net, x, x, t, emb, mask, 128, 32, 4), 128, 32)
        hard_edge, hard_inside = _seams(predict_tiled(net, x, x, t, emb, mask, 128, 0, 4), 128, 0)
    assert at_edge <= inside
    assert hard_edge > 1.5 * hard_inside  # the control: without blending the seam shows


class SmoothingOracle(torch.nn.Module):
    """An analytic denoiser whose answer is a 9x9 box blur of the conditioning, zero-padded at the
    edges of whatever it is shown: exact inside a tile, darker at a tile's border. Hard tiles
    therefore leave seams in the final image; tiles blended at every step must not."""

    size_multiple = 2

    def __init__(self, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("alphas", alphas_cumprod.float())

    def forward(self, x, t, emb, mask, condition):
        cond = condition
        target = torch.nn.functional.avg_pool2d(cond, 9, stride=1, padding=4, count_include_pad=True)
        a = self.alphas[t.long()].view(-1, 1, 1, 1)
        return (x - a.sqrt() * target) / (1 - a).sqrt()


def test_no_seam_in_a_tiled_upscale_of_a_real_photo(model_dir, lr_photo):
    from promptsr.diffusion import train_scheduler

    model = load_model(model_dir)
    model.unet = SmoothingOracle(train_scheduler(model.diffusion).alphas_cumprod)
    up = Upscaler(model)
    blended = up.upscale(lr_photo, "medium noise, downsample", steps=10, tile=128, overlap=32)
    hard = up.upscale(lr_photo, "medium noise, downsample", steps=10, tile=128, overlap=0)
    at_edge, inside = _seams(torch.from_numpy(blended).permute(2, 0, 1), 128, 32)
    hard_edge, hard_inside = _seams(torch.from_numpy(hard).permute(2, 0, 1), 128, 0)
    assert at_edge <= inside, (at_edge, inside)
    assert hard_edge > 1.25 * hard_inside, (hard_edge, hard_inside)  # the control: a seam the test catches


def test_colour_fix_pulls_colours_toward_the_reference():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 32, 32, generator=g) * 0.5
    sr = (ref * 1.5 + 0.3).clamp(0, 1)
    fixed = color_fix(sr, ref, "adain")
    torch.testing.assert_close(fixed.mean(dim=(2, 3)), ref.mean(dim=(2, 3)), atol=1e-3, rtol=0)
    wave = color_fix(sr, ref, "wavelet")
    assert (wave.mean(dim=(2, 3)) - ref.mean(dim=(2, 3))).abs().max() < (
        sr.mean(dim=(2, 3)) - ref.mean(dim=(2, 3))
    ).abs().max()
    assert color_fix(sr, ref, "none") is sr


def _atrous_low_reference(img: torch.Tensor) -> torch.Tensor:
    """StableSR's description written as convolutions: 5 passes of the 3x3 kernel with weights 1/16,
    1/8, 1/4, dilated 1, 2, 4, 8, 16, edges replicated."""
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    c = img.shape[1]
    for d in (1, 2, 4, 8, 16):
        img = torch.nn.functional.conv2d(
            torch.nn.functional.pad(img, (d, d, d, d), mode="replicate"), k.expand(c, 1, 3, 3), dilation=d, groups=c
        )
    return img


def test_wavelet_colour_fix_keeps_the_sr_detail_bands_on_the_reference_low_band():
    photo = torch.from_numpy(np.ascontiguousarray(load_sample("coffee")[:96, :96])).permute(2, 0, 1)[None] / 255.0
    sr = photo * 0.8 + 0.1
    ref = _atrous_low_reference(photo).flip(1) * 0.6 + 0.2  # other colours, no detail
    fixed = color_fix(sr, ref, "wavelet")
    expect = (sr - _atrous_low_reference(sr) + _atrous_low_reference(ref)).clamp(0, 1)
    torch.testing.assert_close(fixed, expect, atol=1e-5, rtol=0)
    assert not torch.equal(fixed, sr) and color_fix(sr, sr, "wavelet").sub(sr).abs().max() < 1e-5
    # Constant images: the result is the reference's constant. [1 2 1] cancels the finest
    # checkerboard: in the reference it is removed, in the SR it passes untouched (away from the
    # replicated edges, 31 pixels wide after five levels).
    flat = torch.full((1, 3, 96, 96), 0.2)
    torch.testing.assert_close(color_fix(flat, torch.full_like(flat, 0.7), "wavelet"), torch.full_like(flat, 0.7))
    checker = 0.05 * (-1.0) ** (torch.arange(96)[:, None] + torch.arange(96)[None, :])
    inner = (slice(None), slice(None), slice(32, 64), slice(32, 64))
    torch.testing.assert_close(color_fix(sr, ref + checker, "wavelet")[inner], fixed[inner], atol=1e-5, rtol=0)
    torch.testing.assert_close(color_fix(sr + checker, ref, "wavelet")[inner], fixed[inner] + checker[32:64, 32:64])


class WideSmoothingOracle(SmoothingOracle):
    size_multiple = 64  # an LR of 4 x 20 is padded to 16 x 32 (by replication: it is too small to reflect)


def test_colour_fix_statistics_come_from_the_image_not_its_padding(model_dir):
    from promptsr.bicubic import bicubic_uint8
    from promptsr.diffusion import train_scheduler

    model = load_model(model_dir)
    model.unet = WideSmoothingOracle(train_scheduler(model.diffusion).alphas_cumprod)
    lr = np.zeros((4, 20, 3), dtype=np.uint8)
    lr[:3] = (40, 60, 200)  # blue above ...
    lr[3] = (230, 30, 30)  # ... a red last row, which the padding repeats 12 times
    out = Upscaler(model).upscale(lr, "", steps=5, tile=64, overlap=16, color="adain")
    assert out.shape == (16, 80, 3)
    ref = bicubic_uint8(lr, 4).reshape(-1, 3).mean(0)
    assert np.abs(out.reshape(-1, 3).mean(0) - ref).max() < 1.0, (out.reshape(-1, 3).mean(0), ref)


def test_bad_options_are_named(upscaler, lr_photo):
    from sr_degrade.errors import SrDegradeError

    with pytest.raises(SrDegradeError, match="--overlap 200"):
        upscaler.upscale(lr_photo, steps=1, tile=128, overlap=200)
    with pytest.raises(SrDegradeError, match="--tile 101"):
        upscaler.upscale(lr_photo, steps=1, tile=101)  # the tiny model's sides must be even
    with pytest.raises(SrDegradeError, match="uint8"):
        upscaler.upscale(lr_photo.astype(np.float32), steps=1)
    with pytest.raises(SrDegradeError, match="trained for x4; x2"):
        upscaler.upscale(lr_photo, steps=1, scale=2)


def test_package_level_api(model_dir, lr_photo):
    import promptsr

    out = promptsr.upscale(lr_photo[:16, :16], "light noise, downsample", model=model_dir, steps=2, seed=3)
    assert out.shape == (64, 64, 3)
    same = Upscaler(model_dir).upscale(lr_photo[:16, :16], "light noise, downsample", steps=2, seed=3)
    assert np.array_equal(out, same)


def test_cli_folder_in_folder_out_with_sidecar_prompts_and_failures(model_dir, lr_photo, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", lr_photo)
    write_image(src / "b.png", lr_photo[:32, :32])
    (src / "b.txt").write_text("heavy noise, downsample")
    (src / "broken.png").write_text("not an image")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [EXE, "upscale", str(src), "-o", str(tmp_path / "out"), "-m", str(model_dir), "--steps", "2",
         "-p", "light blur, downsample"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 1 and "broken.png" in r.stderr and "Traceback" not in r.stderr
    assert read_image(tmp_path / "out" / "a.png").shape == (192, 256, 3)
    assert read_image(tmp_path / "out" / "b.png").shape == (128, 128, 3)
    assert "upscaled 2 of 3" in r.stdout
    r = subprocess.run(
        [EXE, "upscale", str(src / "a.png"), "-o", str(tmp_path / "x.png"), "-m", str(tmp_path / "nomodel")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "not a PromptSR model folder" in r.stderr


def test_the_clip_setting_travels_with_the_model_and_old_folders_clip_with_a_notice(
    model_dir, lr_photo, tmp_path, capsys
):
    import json
    import shutil

    assert json.loads((model_dir / "diffusion.json").read_text())["clip"] == "clamp"
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    data = json.loads((old / "diffusion.json").read_text())
    del data["clip"]  # as written before clip settings existed
    (old / "diffusion.json").write_text(json.dumps(data))
    capsys.readouterr()
    model = load_model(old)
    notice = capsys.readouterr().err.strip().splitlines()
    assert model.diffusion.clip == "clamp" and len(notice) == 1 and "--no-clip" in notice[0]

    lr = lr_photo[:16, :16]
    up = Upscaler(model)
    clipped, unclipped = (up.upscale(lr, "", steps=4, clip=c) for c in ("clamp", "none"))
    assert np.array_equal(up.upscale(lr, "", steps=4), clipped)  # the folder's setting is the default
    assert np.abs(clipped.astype(int) - unclipped.astype(int)).mean() > 1  # and it matters for this model
    data["clip"] = "none"
    (old / "diffusion.json").write_text(json.dumps(data))
    assert np.array_equal(Upscaler(old).upscale(lr, "", steps=4), unclipped)
    data["clip"] = "sometimes"
    (old / "diffusion.json").write_text(json.dumps(data))
    with pytest.raises(SrDegradeError, match="diffusion.json.*'sometimes'.*clamp"):
        load_model(old)


def test_cli_clip_options_and_compare(model_dir, lr_photo, tmp_path):
    from promptsr.bicubic import bicubic_uint8
    from promptsr.metrics import psnr_y

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    lr = lr_photo[:24, :32]
    write_image(tmp_path / "lr.png", lr)
    hr = np.ascontiguousarray(load_sample("coffee")[:96, :128])
    write_image(tmp_path / "hr.png", hr)
    r = subprocess.run(
        [EXE, "upscale", str(tmp_path / "lr.png"), "-o", str(tmp_path / "sr.png"), "-m", str(model_dir), "--steps", "2",
         "--clip", "sometimes"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "'sometimes'" in r.stderr and "recompute" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [EXE, "upscale", str(tmp_path / "lr.png"), "-o", str(tmp_path / "sr.png"), "-m", str(model_dir), "--steps", "2",
         "--no-clip", "--strength", "0.5", "--tf32", "--compile", "no_such_backend", "--device-share", "0.5"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert any("tf32" in n for n in notes) and any("no_such_backend" in n for n in notes), r.stderr  # fallbacks
    sr = read_image(tmp_path / "sr.png")
    assert np.array_equal(sr, Upscaler(model_dir).upscale(lr, "", steps=2, clip="none", strength=0.5))
    assert not np.array_equal(sr, Upscaler(model_dir).upscale(lr, "", steps=2, clip="none"))
    r = subprocess.run(
        [EXE, "compare", str(tmp_path / "sr.png"), "--lr", str(tmp_path / "lr.png"), "--hr", str(tmp_path / "hr.png"),
         "-o", str(tmp_path / "cmp.png"), "--bicubic", str(tmp_path / "bic.png")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    bic = read_image(tmp_path / "bic.png")
    assert np.array_equal(bic, bicubic_uint8(lr, 4))
    assert f"{psnr_y(bic, hr):6.2f} dB" in r.stdout.splitlines()[0]
    assert f"{psnr_y(sr, hr):6.2f} dB" in r.stdout.splitlines()[1]
    sheet = read_image(tmp_path / "cmp.png")
    assert sheet.shape[1] == 3 * 128 + 2 * 4 and sheet.shape[0] > 96  # three columns with captions
    r = subprocess.run(
        [EXE, "compare", str(tmp_path / "sr.png"), "--lr", str(tmp_path / "lr.png"), "--hr", str(tmp_path / "lr.png"),
         "-o", str(tmp_path / "cmp2.png")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "HR image 32x24" in r.stderr and not (tmp_path / "cmp2.png").exists()
