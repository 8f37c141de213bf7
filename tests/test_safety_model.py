"""Nothing PromptSR loads runs code from it: a pickle payload planted in any file of a training
checkpoint or of a model folder is refused with one clear error and never executed (resume, export,
load/upscale). And bad values of a training config or a model folder get one line naming them."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import randomized_tiny

from promptsr.checkpoint import Checkpointer, TrainState
from promptsr.config import load_train_config
from promptsr.export import load_model
from sr_degrade.errors import ConfigError, SrDegradeError


class Payload:
    """Unpickling this creates the file `path`: what a planted file would run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def checkpointer(out: Path) -> Checkpointer:
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    acc = Accelerator(cpu=True)
    net = randomized_tiny(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10])
    net, opt, sched = acc.prepare(net, opt, sched)
    return Checkpointer(acc, out, 2, net, opt, sched, EMAModel(net.parameters(), decay=0.9), TrainState())


def test_a_payload_in_any_checkpoint_file_is_refused_and_never_run(tmp_path):
    saved = checkpointer(tmp_path / "run")
    saved.state.step = 7
    ckpt = saved.save()
    names = sorted(p.name for p in ckpt.iterdir())
    assert not [n for n in names if n.endswith(".pkl")] and len(names) == 6
    ran = tmp_path / "payload_ran"
    for name in names:
        victim = tmp_path / f"planted_{name}"
        shutil.copytree(ckpt, victim)
        (victim / name).write_bytes(pickle.dumps(Payload(ran)))
        with pytest.raises(SrDegradeError) as e:
            checkpointer(tmp_path / "run").resume(str(victim))
        assert name in str(e.value) or "cannot resume" in str(e.value), (name, str(e.value))
        assert len(str(e.value).splitlines()) == 1 and not ran.exists(), name
    # A clean copy loads: the refusals above came from the planted file.
    fresh = checkpointer(tmp_path / "run")
    fresh.resume(str(ckpt))
    assert fresh.state.step == 7


def test_a_payload_in_any_model_folder_file_is_refused_and_never_run(model_dir, tmp_path):
    ran = tmp_path / "payload_ran"
    files = sorted(p.relative_to(model_dir) for p in model_dir.rglob("*") if p.is_file())
    loaded_files = [f for f in files if not str(f).startswith("scheduler")]  # scheduler/ is written for diffusers users
    for rel in loaded_files:
        victim = tmp_path / f"planted_{str(rel).replace('/', '_')}"
        shutil.copytree(model_dir, victim)
        (victim / rel).write_bytes(pickle.dumps(Payload(ran)))
        with pytest.raises(SrDegradeError) as e:
            load_model(victim)
        assert len(str(e.value).splitlines()) == 1 and not ran.exists(), (rel, str(e.value))
    # Through the command line: one error line, exit 2, no traceback.
    victim = tmp_path / "planted_unet_diffusion_pytorch_model.safetensors"
    lr = tmp_path / "lr.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(lr), np.zeros((16, 16, 3), np.uint8))
    exe = Path(sys.executable).parent / "promptsr"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [str(exe), "upscale", str(lr), "-o", str(tmp_path / "sr.png"), "--model", str(victim), "--steps", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and not ran.exists(), r.stderr[-2000:]
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_bad_training_values_and_model_metadata_get_one_line(model_dir, tmp_path):
    bad = {
        "optim.lr=-1": "optim.lr",
        "optim.lr=.nan": "optim.lr",
        "optim.betas=[0.9]": "optim.betas",
        "data.crop=0": "data.crop",
        "data.num_workers=-1": "data.num_workers",
        "diffusion.num_train_timesteps=0": "diffusion.num_train_timesteps",
    }
    for override, key in bad.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_train_config(None, [override])
    # A typo in an override is blamed on the override, not on the config file.
    cfg_file = Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"
    with pytest.raises(ConfigError, match=r"^override optim\.learnrate: unknown config key"):
        load_train_config(cfg_file, ["optim.learnrate=1"])
    for content, expected in (
        ("not json", "not readable JSON"),
        ('{"format": "promptsr-model", "scale": 0}', "scale 0"),
    ):
        victim = tmp_path / f"meta_{len(content)}"
        shutil.copytree(model_dir, victim)
        (victim / "promptsr.json").write_text(content)
        with pytest.raises(SrDegradeError, match=expected):
            load_model(victim)
