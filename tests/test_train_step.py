"""The trainer's optimisation step under its speed settings: torch.compile compiles the training
forward once (not per timestep) and trains exactly as eager does; a backend that fails falls back
with one notice; "auto" settings stay off on the CPU."""

from __future__ import annotations

import types

import pytest
import torch
from accelerate import Accelerator
from conftest import randomized_tiny

from promptsr.diffusion import DiffusionConfig, train_scheduler
from promptsr.train_data import Batch
from promptsr.train_step import Speed, TrainStep, resolve_speed


def batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    hr, cond = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    return Batch(hr, cond, torch.randn(2, 5, 384, generator=g), torch.ones(2, 5, dtype=torch.bool))


def losses(speed: Speed, steps: int = 3) -> list[float]:
    """Losses of `steps` training steps of the same seeded model on the same batch (each step draws
    its own timesteps and noise from the seeded global RNG)."""
    acc = Accelerator(cpu=True)
    net = randomized_tiny(0).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net, opt = acc.prepare(net, opt)
    step = TrainStep(acc, net, opt, train_scheduler(DiffusionConfig()), 1.0, speed)
    torch.manual_seed(1)
    out = []
    for _ in range(steps):
        loss, applied = step(batch())
        assert applied
        out.append(float(loss))
    return out


def test_compiled_step_compiles_once_and_trains_like_eager():
    graphs = []

    def counting(gm, example_inputs):  # aot_eager: cheap on 2 cores, same graphs as inductor would get
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    compiled = losses(Speed(compile=counting))
    eager = losses(Speed())
    assert len(graphs) == 1  # three steps, three sets of timesteps: one compilation
    assert compiled == pytest.approx(eager, rel=1e-5) and compiled[-1] < compiled[0]


def test_a_failing_compile_backend_falls_back_to_eager_with_one_notice(capsys):
    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    torch._dynamo.reset()
    fallback = losses(Speed(compile=broken))
    err = capsys.readouterr().err
    assert err.count("note: torch.compile") == 1 and "running eager" in err
    # The failed attempt drew its own timesteps and noise, so the draws differ from an eager run's; it trains.
    assert all(0 < v < 10 for v in fallback) and fallback[-1] < fallback[0]


def test_auto_settings_are_off_on_the_cpu_and_impossible_ones_fall_back(capsys):
    run = types.SimpleNamespace(tf32="auto", channels_last="auto", fused_adam="auto", compile="auto")
    assert resolve_speed(run, torch.device("cpu")) == Speed()
    assert capsys.readouterr().err == ""
    run = types.SimpleNamespace(tf32=True, channels_last=True, fused_adam=False, compile="no_such_backend")
    speed = resolve_speed(run, torch.device("cpu"))
    assert speed == Speed(channels_last=True)
    err = capsys.readouterr().err
    assert err.count("note: ") == 2 and "run.tf32" in err and "no_such_backend" in err
