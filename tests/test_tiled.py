"""Tiled inference that scales: tiles sliced (not concatenated) and blended in float32, the sampler's
denoise callable, a compiled model that does not recompile per step, bounded host memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomized_tiny

from promptsr.diffusion import DiffusionConfig, sample, sample_with, sampling_scheduler
from promptsr.export import PromptSRModel
from promptsr.inference import Upscaler, _ramp, predict_tiled, tile_starts
from sr_degrade import DegradationConfig

ROOT = Path(__file__).resolve().parents[1]


def concatenated_tiles(model, x, cond, t, emb, mask, tile, overlap, batch):
    """The tiled prediction as it was before slicing: the whole [x, cond] concatenated for every tile,
    accumulators in x's dtype, a normalising division at the end."""
    _, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    weight = (_ramp(th, overlap if len(ys) > 1 else 0)[:, None] * _ramp(tw, overlap if len(xs) > 1 else 0)[None, :]).to(
        x.dtype
    )
    total, norm = torch.zeros_like(x), torch.zeros((1, 1, h, w), dtype=x.dtype)
    boxes = [(y, xx) for y in ys for xx in xs]
    for start in range(0, len(boxes), batch):
        chunk = boxes[start : start + batch]
        inp = torch.cat([torch.cat([x, cond], 1)[:, :, y : y + th, xx : xx + tw] for y, xx in chunk])
        n = len(chunk)
        eps = model(inp, t.expand(n), emb.expand(n, -1, -1), mask.expand(n, -1))
        for k, (y, xx) in enumerate(chunk):
            total[:, :, y : y + th, xx : xx + tw] += eps[k : k + 1].to(x.dtype) * weight
            norm[:, :, y : y + th, xx : xx + tw] += weight
    return total / norm


def _inputs(h: int, w: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, cond = torch.randn(1, 3, h, w, generator=g), torch.randn(1, 3, h, w, generator=g).clamp(-1, 1)
    return x, cond, torch.randn(1, 5, 384, generator=g), torch.ones(1, 5, dtype=torch.bool), torch.tensor([700])


def test_sliced_tiles_give_the_noise_of_the_concatenated_path():
    net = randomized_tiny(1)
    x, cond, emb, mask, t = _inputs(96, 80)
    with torch.no_grad():
        sliced = predict_tiled(net, x, cond, t, emb, mask, tile=32, overlap=8, batch=3)  # 12 tiles: chunks 3,3,3,3
        reference = concatenated_tiles(net, x, cond, t, emb, mask, 32, 8, 5)  # a different chunking, same tiles
    assert sliced.dtype == torch.float32
    torch.testing.assert_close(sliced, reference, atol=2e-6, rtol=1e-5)


class PointwiseBF16(torch.nn.Module):
    """A 1x1 convolution in bfloat16: its noise at a pixel depends on that pixel alone, so tiling must
    not change it at all; only the blend's arithmetic can."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(6, 3, 1).to(torch.bfloat16)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(-1, 1, 18).view(3, 6, 1, 1))
            self.conv.bias.fill_(0.1)

    def forward(self, inp, t, emb, mask, condition=None):
        if condition is not None:  # the denoiser's contract: it concatenates the conditioning itself
            inp = torch.cat([inp, condition], 1)
        return self.conv(inp.to(torch.bfloat16))


def test_a_bf16_model_is_blended_in_float32():
    model = PointwiseBF16()
    x, cond, emb, mask, t = _inputs(96, 112, seed=1)
    with torch.no_grad():
        whole = model(torch.cat([x, cond], 1), t, emb, mask).float()
        tiled = predict_tiled(model, x, cond.to(torch.bfloat16), t, emb, mask, tile=32, overlap=16, batch=4)
        in_bf16 = concatenated_tiles(model, x.bfloat16(), cond.bfloat16(), t, emb, mask, 32, 16, 4).float()
    # Weights that sum to one over identical bf16 values: float32 rounding only (~1e-7 relative).
    bound = 2e-6 * whole.abs().max().item()
    assert (tiled - whole).abs().max().item() <= bound
    assert (in_bf16 - whole).abs().max().item() > 100 * bound  # the control: bf16 accumulators miss it


def test_the_sampler_core_runs_a_denoise_callable_as_sample_runs_the_model():
    net = randomized_tiny(2)
    _, cond, emb, mask, _ = _inputs(32, 32, seed=2)
    scheduler = sampling_scheduler("ddim", DiffusionConfig())
    with torch.no_grad():
        via_model = sample(net, cond, emb, mask, scheduler, 4, generator=torch.Generator().manual_seed(5))
        via_tiles = sample_with(
            lambda x_t, t: predict_tiled(net, x_t, cond, t, emb, mask, tile=32, overlap=0, batch=1),
            cond.shape, scheduler, 4, generator=torch.Generator().manual_seed(5),
        )  # fmt: skip
    torch.testing.assert_close(via_tiles, via_model, atol=1e-6, rtol=0)  # one tile covering the image


def tiny_model(seed: int = 0) -> PromptSRModel:
    """The tiny denoiser with a one-prompt table (the empty prompt): no text encoder needed."""
    g = torch.Generator().manual_seed(seed)
    return PromptSRModel(
        folder=Path("in-memory"), unet=randomized_tiny(seed), diffusion=DiffusionConfig(), encoder={},
        degradation=DegradationConfig(), meta={"scale": 4},
        table={"": torch.randn(4, 384, generator=g).to(torch.float16).numpy()},
    )  # fmt: skip


def test_compiled_sampling_compiles_once_per_tile_batch_shape_not_per_step():
    import torch._dynamo

    torch._dynamo.reset()
    compiles: list[int] = []
    aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def counting(gm, example_inputs):
        compiles.append(1)
        return aot_eager(gm, example_inputs)

    up = Upscaler(tiny_model(), compile=counting)
    lr = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)  # 64 x 96: 3 x 4 tiles of 32
    after_step: list[int] = []
    seen = lambda i, n: after_step.append(len(compiles))  # noqa: E731
    out = up.upscale(lr, "", steps=10, tile=32, overlap=8, batch=5, callback=seen)
    assert len(after_step) == 10 and out.shape == (64, 96, 3)
    # Chunks of 5, 5 and 2 tiles: two shapes, compiled in the first step; then no more compilations.
    assert 1 <= after_step[0] <= 2 and after_step[-1] == after_step[0], after_step
    eager = Upscaler(tiny_model()).upscale(lr, "", steps=10, tile=32, overlap=8, batch=5)
    assert np.abs(out.astype(int) - eager.astype(int)).max() <= 1


def test_an_unusable_compile_backend_falls_back_with_one_notice(capsys):
    up = Upscaler(tiny_model(), compile="no_such_backend", tf32=True)
    lr = np.zeros((8, 8, 3), dtype=np.uint8)
    assert up.upscale(lr, "", steps=2).shape == (32, 32, 3)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2 and any("no_such_backend" in n for n in notes) and any("tf32" in n for n in notes), notes

    def broken(gm, example_inputs):
        raise RuntimeError("this compiler cannot run here")

    up = Upscaler(tiny_model(), compile=broken)
    first = up.upscale(lr, "", steps=2)
    assert np.array_equal(first, up.upscale(lr, "", steps=2))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "running uncompiled" in notes[0], notes


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset is Linux-only")
def test_host_memory_of_a_tiled_upscale_stays_within_about_eight_output_copies(tmp_path):
    """bench/infer.py's own memory case in a fresh process: a 512^2 output, 2 steps, small tiles (so the
    model's activations, the constant, stay small beside the image-sized state). Measured 7.4 to 10.2
    copies across runs (one copy is only 3 MB here, so allocator and lazy-import noise shows); 12 to 16
    before tiles were sliced and the state, blend and end conversion kept in place."""
    out = tmp_path / "rows.json"
    # One thread: tiny tiles are many small ops, and two threads on a busy 2-core machine wait on each other.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "infer.py"), "--no-latency", "--tiled-sizes", "512", "--steps", "2",
         "--tile", "64", "--overlap", "16", "--batch", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())
    assert row["state"] == "cpu" and 1 < row["host_copies"] < 11.5, row
