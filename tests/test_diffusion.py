"""The schedule and the sampler against an analytic model that knows the clean image: DDIM must
then land on it exactly, and the loss must be zero; plus the bicubic conditioning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from promptsr.bicubic import bicubic_upsample
from promptsr.diffusion import (
    CLIP_MODES,
    SCHEDULER_ALIASES,
    DiffusionConfig,
    epsilon_loss,
    reconfigured,
    sample,
    sampling_scheduler,
    train_scheduler,
)
from sr_degrade.errors import ConfigError

CFG = DiffusionConfig()


def oracle(x0: torch.Tensor, scheduler):
    """eps(x_t, t) = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t): the noise that explains x_t exactly."""
    alphas = scheduler.alphas_cumprod

    def model(inp: torch.Tensor, t: torch.Tensor, emb, mask, condition=None) -> torch.Tensor:
        a = alphas[t.long()].to(inp.dtype).view(-1, 1, 1, 1)
        return (inp[:, :3] - a.sqrt() * x0) / (1 - a).sqrt()

    return model


def test_schedule_is_the_papers():
    s = train_scheduler(CFG)
    assert s.config.num_train_timesteps == 2000
    betas = s.betas.double()
    assert betas[0].item() == pytest.approx(1e-6) and betas[-1].item() == pytest.approx(1e-2)
    assert torch.allclose(betas[1:] - betas[:-1], torch.full((1999,), (1e-2 - 1e-6) / 1999, dtype=torch.float64))
    ddim = sampling_scheduler("ddim", CFG)
    ddim.set_timesteps(50)
    assert ddim.timesteps.tolist() == list(range(1960, -1, -40))


@pytest.mark.parametrize("clip", list(CLIP_MODES))
@pytest.mark.parametrize(("name", "steps"), [("ddim", 50), ("ddim", 10), ("dpm-solver++", 20)])
def test_an_oracle_model_is_sampled_back_to_the_clean_image(name, steps, clip):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    cond = torch.zeros_like(x0)
    scheduler = sampling_scheduler(name, CFG)
    out = sample(oracle(x0, train_scheduler(CFG)), cond, None, None, scheduler, steps, generator=g, clip=clip)
    assert torch.allclose(out, x0, atol=2e-3), (out - x0).abs().max()


def biased(x0: torch.Tensor, scheduler, bias: float = 0.3):
    """The oracle's noise plus a constant: its x0 estimate is off by bias * sqrt((1 - a) / a), which
    near t = T is ~40x the bias, far outside [-1, 1]."""
    exact = oracle(x0, scheduler)
    return lambda inp, t, emb, mask, condition=None: exact(inp, t, emb, mask) + bias


@pytest.mark.parametrize("name", sorted(SCHEDULER_ALIASES))
def test_clipping_keeps_every_intermediate_x0_estimate_in_range(name):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(1, 3, 8, 8, generator=g) * 1.6 - 0.8
    model = biased(x0, train_scheduler(CFG))
    extremes = {}
    for clip in CLIP_MODES:
        seen: list[float] = []
        sample(
            model, torch.zeros_like(x0), None, None, sampling_scheduler(name, CFG), 10,
            generator=torch.Generator().manual_seed(0), clip=clip,
            x0_callback=lambda i, est, seen=seen: seen.append(est.abs().max().item()),
        )  # fmt: skip
        assert len(seen) == 10, f"{name}: the scheduler's x0 estimate was not seen at every step"
        extremes[clip] = max(seen)
    assert extremes["recompute"] <= 1 + 1e-4 and extremes["clamp"] <= 1 + 1e-4, extremes
    assert extremes["none"] > 2, extremes  # without clipping the biased estimate leaves the range


def test_the_two_clip_variants_differ_only_for_ddim():
    x0 = torch.zeros(1, 3, 8, 8)

    def model(inp, t, emb, mask, condition=None):  # knows no clean image: the trajectory decides the result
        return 0.9 * inp[:, :3] + 0.2

    def run(name: str, clip: str) -> torch.Tensor:
        return sample(model, torch.zeros_like(x0), None, None, sampling_scheduler(name, CFG), 10, clip=clip,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip

    assert (run("ddim", "clamp") - run("ddim", "recompute")).abs().max() > 0.05
    # DPM-Solver++ works on x0 alone: clamping it is clamping it, whichever way; and it matches
    # diffusers' own static thresholding (sample_max_value = 1).
    torch.testing.assert_close(run("dpm-solver++", "clamp"), run("dpm-solver++", "recompute"))
    thresholded = reconfigured(sampling_scheduler("dpm-solver++", CFG), thresholding=True, sample_max_value=1.0)
    ref = sample(model, torch.zeros_like(x0), None, None, thresholded, 10, clip="none",
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(run("dpm-solver++", "recompute"), ref, atol=1e-4, rtol=1e-4)


def test_an_unknown_clip_variant_names_the_known_ones():
    with pytest.raises(ConfigError, match="'sometimes'.*clamp.*recompute.*none"):
        DiffusionConfig(clip="sometimes")
    with pytest.raises(ValueError, match="recompute"):
        sample(lambda *a: a[0][:, :3], torch.zeros(1, 3, 8, 8), None, None, sampling_scheduler("ddim", CFG), 2,
               clip="yes")  # fmt: skip
    assert DiffusionConfig().clip == "clamp" and "clip" not in DiffusionConfig().scheduler_kwargs()


def test_epsilon_loss_is_zero_for_the_oracle_and_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    s = train_scheduler(CFG)
    assert epsilon_loss(oracle(x0, s), x0, torch.zeros_like(x0), None, None, s, generator=g).item() < 1e-8
    zero = epsilon_loss(
        lambda inp, t, e, m, condition=None: torch.zeros_like(inp[:, :3]), x0, x0, None, None, s, generator=g
    )
    assert zero.item() == pytest.approx(1.0, abs=0.15)  # E[eps^2] = 1


def test_sampling_is_reproducible_with_a_generator():
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1

    def blurry(inp, t, e, m, condition=None):
        return inp[:, :3] * 0.1

    runs = [
        sample(blurry, x0, None, None, sampling_scheduler("ddim", CFG), 5, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_unknown_scheduler_is_named():
    with pytest.raises(ValueError, match="nope"):
        sampling_scheduler("nope", CFG)


def test_bicubic_upsample_shape_range_and_agreement_with_opencv():
    import cv2

    g = torch.Generator().manual_seed(3)
    lr = torch.rand(1, 3, 12, 10, generator=g)
    up = bicubic_upsample(lr, 4, 0.0, 1.0)
    assert up.shape == (1, 3, 48, 40) and up.min() >= 0 and up.max() <= 1
    ref = cv2.resize(lr[0].permute(1, 2, 0).numpy(), (40, 48), interpolation=cv2.INTER_CUBIC)
    # Same kernel (a = -0.75) and pixel-centre alignment as OpenCV; borders differ (replicate vs clamp).
    inner = np.abs(up[0].permute(1, 2, 0).numpy() - np.clip(ref, 0, 1))[8:-8, 8:-8]
    assert inner.max() < 1e-5


@pytest.mark.parametrize("name", ["ddim", "dpm-solver++", "euler"])
def test_strength_starts_from_the_noised_conditioning_and_runs_that_share_of_the_steps(name):
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    cond = (x0 + 0.1 * torch.randn(x0.shape, generator=g)).clamp(-1, 1)  # a rough estimate of x0
    exact = oracle(x0, train_scheduler(CFG))
    seen: list[tuple[int, torch.Tensor]] = []

    def model(inp, t, emb, mask, condition=None):
        seen.append((int(t[0]), inp[:, :3].clone()))
        return exact(inp, t, emb, mask, condition)

    noise = torch.randn(x0.shape, generator=g)
    scheduler = sampling_scheduler(name, CFG)
    out = sample(model, cond, None, None, scheduler, 10, noise=noise, strength=0.5)
    assert len(seen) == 5 and seen[0][0] <= 1000 and all(a[0] > b[0] for a, b in itertools.pairwise(seen))
    a = train_scheduler(CFG).alphas_cumprod[seen[0][0]]
    torch.testing.assert_close(seen[0][1], a.sqrt() * cond + (1 - a).sqrt() * noise, atol=2e-3, rtol=0)
    assert torch.allclose(out, x0, atol=2e-3)  # the oracle still lands on the clean image
    with pytest.raises(ValueError, match="strength"):
        sample(model, cond, None, None, scheduler, 10, strength=0.0)
