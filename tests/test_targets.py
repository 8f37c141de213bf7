"""What the network predicts (epsilon, sample, v_prediction) and of what (the image, or its residual over
bicubic), through every scheduler alias: an analytic denoiser that knows the answer must be sampled back to
it, the loss must be zero for it, and the settings travel with a model folder."""

from __future__ import annotations

import itertools

import pytest
import torch

from promptsr.diffusion import (
    PREDICTIONS,
    SCHEDULER_ALIASES,
    TARGETS,
    DiffusionConfig,
    diffusion_loss,
    sample,
    sample_with,
    sampling_scheduler,
    snr_weights,
    train_scheduler,
)
from sr_degrade.errors import ConfigError

COMBINATIONS = list(itertools.product(PREDICTIONS, TARGETS))


def answer(x0: torch.Tensor, alphas: torch.Tensor, prediction: str):
    """The output an exact model of `prediction` type gives at (x_t, t) when the clean value is `x0`."""

    def output(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas[t.long()].to(x_t.dtype).view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        if prediction == "epsilon":
            return eps
        if prediction == "sample":
            return x0.expand_as(x_t)
        return a.sqrt() * eps - (1 - a).sqrt() * x0  # v

    return output


def known(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An HR image in [-0.9, 0.9] and a rough 'bicubic' conditioning of it, (1, 3, 8, 8) each."""
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(1, 3, 8, 8, generator=g) * 1.8 - 0.9
    return hr, (hr + 0.2 * torch.randn(hr.shape, generator=g)).clamp(-1, 1)


@pytest.mark.parametrize(("prediction", "target"), COMBINATIONS)
def test_an_analytic_denoiser_is_sampled_back_to_its_answer_by_every_scheduler(prediction, target):
    cfg = DiffusionConfig(prediction=prediction, target=target)
    hr, cond = known()
    cond = -cond  # residuals up to 1.8: outside the image's [-1, 1], inside the residual's clip range
    x0 = hr - cond if target == "residual" else hr
    alphas = train_scheduler(cfg).alphas_cumprod
    exact = answer(x0, alphas, prediction)
    for name in sorted(SCHEDULER_ALIASES):
        for strength in (1.0, 0.5):
            out = sample(
                lambda inp, t, e, m, condition=None: exact(inp[:, :3], t), cond, None, None,
                sampling_scheduler(name, cfg), 10,
                generator=torch.Generator().manual_seed(1), strength=strength, target=target,
            )  # fmt: skip
            err = (out - hr).abs().max().item()
            assert err < 2e-3, f"{prediction}/{target} via {name} at strength {strength}: off by {err}"


@pytest.mark.parametrize("name", sorted(SCHEDULER_ALIASES))
def test_a_model_that_predicts_zero_residual_returns_exactly_the_bicubic_image(name):
    cfg = DiffusionConfig(prediction="sample", target="residual")
    _, cond = known(2)
    for strength in (1.0, 0.3):
        out = sample_with(
            lambda x_t, t: torch.zeros_like(x_t), cond.shape, sampling_scheduler(name, cfg), 8, start=cond,
            generator=torch.Generator().manual_seed(0), strength=strength, target="residual",
        )  # fmt: skip
        assert torch.equal(out, cond), (name, strength, (out - cond).abs().max())


@pytest.mark.parametrize("prediction", list(PREDICTIONS))
def test_clipping_keeps_a_residuals_x0_estimate_in_its_own_range(prediction):
    cfg = DiffusionConfig(prediction=prediction, target="residual")
    hr, cond = known(3)
    alphas = train_scheduler(cfg).alphas_cumprod
    exact = answer(hr - cond, alphas, "epsilon")

    def biased(x_t, t):  # an epsilon off by 0.5, handed over in `prediction`'s own terms
        a = alphas[t.long()].view(-1, 1, 1, 1)
        eps = exact(x_t, t) + 0.5
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        return {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction]

    for name in ("ddim", "dpm-solver++", "euler"):
        extremes = {}
        for clip in ("clamp", "none"):
            seen: list[float] = []
            sample_with(
                biased, cond.shape, sampling_scheduler(name, cfg), 10, start=cond, clip=clip, target="residual",
                generator=torch.Generator().manual_seed(0),
                x0_callback=lambda i, est, seen=seen: seen.append(est.abs().max().item()),
            )  # fmt: skip
            extremes[clip] = max(seen)
        assert extremes["clamp"] <= 2 + 1e-4 < extremes["none"], (name, extremes)


@pytest.mark.parametrize(("prediction", "target"), COMBINATIONS)
def test_the_loss_is_zero_for_the_answer_and_min_snr_weights_every_prediction_alike(prediction, target):
    cfg = DiffusionConfig(prediction=prediction, target=target)
    hr, cond = known(4)
    s = train_scheduler(cfg)
    x0 = hr - cond if target == "residual" else hr
    exact = answer(x0, s.alphas_cumprod, prediction)
    t = torch.tensor([0, 300, 1999])
    noise = torch.randn((3, *hr.shape[1:]), generator=torch.Generator().manual_seed(5))
    hr3, cond3 = hr.expand(3, -1, -1, -1), cond.expand(3, -1, -1, -1)

    def loss(model, gamma=0.0):
        return diffusion_loss(model, hr3, cond3, None, None, s, timesteps=t, noise=noise, target=target,
                              snr_gamma=gamma).item()  # fmt: skip

    assert loss(lambda inp, tt, e, m, condition=None: exact(inp[:, :3], tt)) < 1e-8
    # A model whose x0 estimate is off by 0.1 everywhere: weighted by min-SNR-5, every prediction type's loss
    # is the x0 loss 0.01 weighted by min(SNR, 5); unweighted they differ by orders of magnitude.
    off = answer(x0 + 0.1, s.alphas_cumprod, prediction)
    a = s.alphas_cumprod[t].double()
    snr = a / (1 - a)
    want = (snr.clamp(max=5.0) * 0.01).mean().item()
    assert loss(lambda inp, tt, e, m, condition=None: off(inp[:, :3], tt), gamma=5.0) == pytest.approx(want, rel=1e-3)
    w = snr_weights(s, t, 5.0).double()
    ref = {"epsilon": snr.clamp(max=5) / snr, "sample": snr.clamp(max=5), "v_prediction": snr.clamp(max=5) / (snr + 1)}
    torch.testing.assert_close(w, ref[prediction], rtol=1e-5, atol=0)


def test_unknown_or_impossible_settings_are_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="diffusion.prediction.*'x0'.*epsilon.*sample.*v_prediction"):
        DiffusionConfig(prediction="x0")
    with pytest.raises(ConfigError, match="diffusion.target.*'difference'.*image.*residual"):
        DiffusionConfig(target="difference")
    with pytest.raises(ConfigError, match="snr_gamma"):
        DiffusionConfig(snr_gamma=-1)
    with pytest.raises(ConfigError, match="zero_terminal_snr.*v_prediction"):
        DiffusionConfig(zero_terminal_snr=True)
    cfg = DiffusionConfig(prediction="v_prediction", zero_terminal_snr=True)
    s = train_scheduler(cfg)
    assert s.alphas_cumprod[-1].item() < 1e-6 and s.config.prediction_type == "v_prediction"
    ddim = sampling_scheduler("ddim", cfg)
    ddim.set_timesteps(10)
    assert int(ddim.timesteps[0]) == 1999  # trailing: sampling starts where SNR is 0
    assert DiffusionConfig().scheduler_kwargs()["prediction_type"] == "epsilon"  # the paper's, by default
    with pytest.raises(ConfigError, match="timestep_spacing.*'last'.*trailing"):
        DiffusionConfig(timestep_spacing="last")
    one = sampling_scheduler("ddim", DiffusionConfig(prediction="sample", timestep_spacing="trailing"))
    one.set_timesteps(1)
    assert one.timesteps.tolist() == [1999]  # one step from pure noise runs at t = T - 1 (leading: at t = 0)
