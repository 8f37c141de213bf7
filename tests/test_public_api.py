"""The public API of sr-degrade, used only through its public names, as another SR project would:
`sr_degrade.__all__` and `sr_degrade.torch.__all__` exist, are documented in the package README, and
work; the core stays torch-free."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sr_degrade
import sr_degrade.torch as sr_torch

README = Path(__file__).resolve().parents[1] / "packages" / "sr-degrade" / "README.md"


def test_every_public_name_is_documented_in_the_package_readme():
    text = README.read_text()
    documented = set(re.findall(r"^\| `([A-Za-z_]+)[`(:]", text, flags=re.MULTILINE))
    for name in [*sr_degrade.__all__, *sr_torch.__all__]:
        assert name in documented, f"{name} is public but not in the README's tables"
        assert hasattr(sr_degrade if name in sr_degrade.__all__ else sr_torch, name)


def test_core_imports_no_torch():
    code = (
        "import sys, sr_degrade, sr_degrade.build, sr_degrade.sources, sr_degrade.cli\n"
        "from sr_degrade import *\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "import sr_degrade.torch, torch\n"
        "assert torch.nn.Module and sr_degrade.torch.DegradeOnTheFly\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert run.returncode == 0, run.stderr


def test_public_names_work_together(tmp_path):
    from sr_degrade import (
        PROMPT_FORMATS,
        ConfigError,
        DegradationConfig,
        DegradationParams,
        ImageError,
        ParsedPrompt,
        PromptError,
        SrDegradeError,
        bins,
        crop_to_scale,
        degrade,
        describe,
        parse_prompt,
        read_image,
        sample_params,
        vocabulary,
        write_image,
    )
    from sr_degrade.samples import sample_paths

    cfg = DegradationConfig()
    hr = read_image(sample_paths()[1])  # chelsea, 451 x 300: not a multiple of the scale
    params = sample_params(cfg, np.random.default_rng(3))
    assert DegradationParams.from_dict(params.to_dict()) == params
    lr = degrade(hr, params)
    assert lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3) and lr.dtype == np.uint8
    assert np.array_equal(degrade(crop_to_scale(hr, 4), params), lr)
    assert crop_to_scale(hr, 4).shape == (300, 448, 3)
    prompt = describe(params)
    parsed = parse_prompt(prompt)
    assert isinstance(parsed, ParsedPrompt) and dict(parsed) == bins(params)
    assert set(prompt.split(", ")) <= set(vocabulary())
    assert [describe(params, f, rng=np.random.default_rng(0)) == "" for f in PROMPT_FORMATS] == [
        False,
        False,
        False,
        True,
    ]
    write_image(tmp_path / "lr.png", lr)
    assert np.array_equal(read_image(tmp_path / "lr.png"), lr)
    for error, call in [
        (PromptError, lambda: parse_prompt("purple blur")),
        (ImageError, lambda: degrade(hr[..., 0], params)),
        (ConfigError, lambda: DegradationConfig.from_dict({"scale": 0})),
    ]:
        with pytest.raises(error) as e:
            call()
        assert isinstance(e.value, SrDegradeError) and isinstance(e.value, ValueError) and str(e.value)
    assert sr_degrade.__version__ == "0.1.0"


def test_shards_through_public_names(tmp_path):
    from sr_degrade import ShardSample, open_shards
    from sr_degrade.build import BuildOptions, build
    from sr_degrade.torch import ShardDataset, collate

    summary = build(BuildOptions(src="sample", out=tmp_path, crop_size=64, workers=1, embed=False), progress=False)
    assert summary.samples == 6
    samples = list(open_shards(tmp_path, mode="eval"))
    assert all(isinstance(s, ShardSample) and s.lr.shape == (16, 16, 3) and s.emb is None for s in samples)
    batch = collate(list(ShardDataset(tmp_path, mode="eval")))
    assert batch["gt"].shape == (6, 3, 64, 64) and batch["lq"].shape == (6, 3, 16, 16) and "emb" not in batch
    assert batch["prompt"] == [s.prompt for s in samples]
