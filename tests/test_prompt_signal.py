"""The prompt signal: the wrong-prompt rule, paired draws, the trainer's val_eps_* logs and `promptsr ablate loss`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import randomized_tiny
from typer.testing import CliRunner

from promptsr.cli import app
from promptsr.diffusion import DiffusionConfig, epsilon_loss, train_scheduler
from promptsr.export import table_prompts
from promptsr.prompt_signal import CONDITIONS, paired_draw_losses, summarise, wrong_prompt
from promptsr.unet import CrossAttention
from sr_degrade import DegradationConfig
from sr_degrade.params import sample_params
from sr_degrade.text import bins, describe, parse_prompt

SIX = [f"val_eps_{c}{s}" for c in CONDITIONS for s in ("", "_se")]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread only waits on a busy core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("true", "wrong"),
    [
        (
            "light blur, upsample, medium noise, medium compression, downsample",
            "heavy blur, downsample, heavy noise, heavy compression, downsample",
        ),
        ("heavy blur, unchange, light noise, downsample", "light blur, upsample, heavy noise, downsample"),
        ("downsample, heavy compression, downsample", "upsample, light compression, downsample"),
        ("medium noise, downsample", "heavy noise, downsample"),
    ],
)
def test_wrong_prompt_moves_every_present_component_furthest(true, wrong):
    assert wrong_prompt(true) == wrong == wrong_prompt(parse_prompt(true))
    got, was = parse_prompt(wrong, strict=True), parse_prompt(true, strict=True)
    assert list(got) == list(was)  # omitted stays omitted, paper order
    assert got["resize2"] == "downsample" and all(got[c] != was[c] for c in was if c != "resize2")


def test_wrong_prompt_of_sampled_params_is_in_the_model_table():
    # Omissions and a shuffled applied order: the wrong prompt still comes in the paper order.
    cfg = DegradationConfig.from_dict(
        {"shuffle_order": True, "p_omit": {"blur": 0.4, "resize1": 0.4, "noise": 0.4, "jpeg": 0.4}}
    )
    table = set(table_prompts(cfg))
    for seed in range(40):
        params = sample_params(cfg, np.random.default_rng(seed))
        wrong = wrong_prompt(params, cfg)
        true, got = bins(params, cfg), parse_prompt(wrong, strict=True, cfg=cfg)
        assert wrong in table and set(got) == set(true)
        assert all(got[c] != true[c] for c in true if c != "resize2")
        assert wrong == wrong_prompt(describe(params, "original", cfg=cfg), cfg)


def _inputs(b: int = 3, size: int = 16):
    g = torch.Generator().manual_seed(7)
    hr, cond = torch.rand(b, 3, size, size, generator=g) * 2 - 1, torch.rand(b, 3, size, size, generator=g) * 2 - 1
    embs = {}
    for name, length in (("true", 9), ("empty", 2), ("wrong", 11)):
        emb = torch.randn(b, length, 384, generator=g)
        embs[name] = (emb, torch.ones(b, length, dtype=torch.bool))
    return hr, cond, embs


def test_draws_are_paired_a_text_blind_model_scores_every_condition_alike():
    hr, cond, embs = _inputs()
    sched = train_scheduler(DiffusionConfig())
    reads = randomized_tiny(3)
    blind = randomized_tiny(3)
    with torch.no_grad():  # no text reaches the output: the cross-attention adds exactly zero
        for module in blind.modules():
            if isinstance(module, CrossAttention):
                module.to_out.weight.zero_()
                module.to_out.bias.zero_()
    same = paired_draw_losses(blind, hr, cond, embs, sched, draws=4, generator=torch.Generator().manual_seed(0))
    assert same["true"].shape == (3, 4)
    assert torch.equal(same["true"], same["empty"]) and torch.equal(same["true"], same["wrong"])
    summary = summarise(same)
    assert summary["wrong_minus_true"].mean == 0 and summary["wrong_minus_true"].se == 0
    assert summary["true"].n == 12 and summary["true"].se > 0

    diff = paired_draw_losses(reads, hr, cond, embs, sched, draws=4, generator=torch.Generator().manual_seed(0))
    again = paired_draw_losses(reads, hr, cond, embs, sched, draws=4, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(diff[c], again[c]) for c in CONDITIONS)  # a seed fixes the numbers
    assert not torch.equal(diff["true"], diff["empty"]) and not torch.equal(diff["true"], diff["wrong"])

    # One draw is Eq. 1 per sample on the same (t, noise) that epsilon_loss takes fixed.
    one = paired_draw_losses(reads, hr, cond, embs, sched, draws=1, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = (torch.rand(3, generator=g, dtype=torch.float64) * 2000).floor().long()
    noise = torch.randn(hr.shape, generator=g)
    with torch.no_grad():
        ref = epsilon_loss(reads, hr, cond, *embs["wrong"], sched, timesteps=t, noise=noise)
    assert one["wrong"].mean().item() == pytest.approx(ref.item(), rel=1e-5)


def test_validation_logs_the_three_losses_with_their_errors(val_shards, tmp_path):
    from accelerate import Accelerator

    from promptsr.config import load_train_config
    from promptsr.train_data import PromptEmbedder, shard_build_info
    from promptsr.validation import Validator

    cfg = load_train_config(
        None,
        [f"data.val={val_shards}", "data.crop=64", f"run.output_dir={tmp_path}", "run.val_samples=3",
         "run.val_steps=2", "run.cpu=true"],
    )  # fmt: skip
    encoder = shard_build_info(str(val_shards))["encoder"]
    records: list[dict] = []
    net = randomized_tiny(4)
    validate = Validator(cfg, PromptEmbedder("minilm", encoder), 4, net.size_multiple)
    validate(Accelerator(cpu=True), net, None, 150, records.append)
    (record,) = records
    assert "val_psnr" in record and set(SIX) <= set(record)
    assert {"val_eps_wrong_minus_true", "val_eps_empty_minus_true_se"} <= set(record)
    assert all(math.isfinite(record[k]) and record[k] > 0 for k in SIX)
    assert record["val_eps_wrong_minus_true"] != 0 and record["val_eps_empty_minus_true"] != 0
    assert (tmp_path / "val" / "step_00000150.png").exists() and net.training
    # The same draws at every validation: an unchanged model logs the same numbers.
    validate(Accelerator(cpu=True), net, None, 300, records.append)
    assert {k: records[1][k] for k in SIX} == {k: record[k] for k in SIX}


def test_ablate_loss_prints_the_three_conditions(model_dir, val_shards, tmp_path):
    runner = CliRunner()
    out = tmp_path / "loss"
    args = ["ablate", "loss", "--model", str(model_dir), "--data", str(val_shards), "--limit", "2", "--draws", "2"]
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert all(f"| {c} |" in r.stdout for c in CONDITIONS) and "tinyval (2 images)" in r.stdout
    record = json.loads((out / "ablation_loss.json").read_text())
    est = record["datasets"]["tinyval"]["estimates"]
    assert est["true"]["n"] == 4 and est["wrong"]["mean"] != est["true"]["mean"]
    assert (out / "ablation_loss.md").read_text().strip() in r.stdout

    r = runner.invoke(app, ["ablate", "loss", "--model", str(tmp_path), "--data", str(val_shards)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "is not a PromptSR model folder" in r.stderr
    r = runner.invoke(app, ["ablate", "lossy", "--model", str(model_dir), "--data", str(val_shards)])
    assert r.exit_code == 2 and "prompt, format, models, loss" in r.stderr
    assert not list(tmp_path.glob("*.json"))


def test_sampling_ablations_without_out_get_one_line(model_dir, val_shards):
    r = CliRunner().invoke(app, ["ablate", "prompt", "--model", str(model_dir), "--data", str(val_shards)])
    assert r.exit_code == 2 and "needs --out" in r.stderr
