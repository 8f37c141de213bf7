"""The trainer under a real `accelerate launch` (two gloo processes on the CPU), resume, export,
config handling and bad input, on shards built from the bundled photos with the tiny preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from promptsr.config import TrainConfig, load_train_config
from sr_degrade.build import BuildOptions, build
from sr_degrade.errors import ConfigError

BIN = Path(sys.executable).parent
TRAIN = Path(__file__).resolve().parents[1] / "packages" / "promptsr-model" / "train.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
LAUNCH_2 = [
    str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_data")
    common = {"src": "sample", "text_encoder": "minilm", "workers": 1}
    build(BuildOptions(out=root / "train", crops_per_image=4, shard_size=8, **common), progress=False)
    build(BuildOptions(out=root / "val", val=True, **common), progress=False)
    return {"train": root / "train", "val": root / "val"}


def overrides(data: dict[str, Path], out: Path, **extra: object) -> list[str]:
    base = {
        "data.train": data["train"],
        "data.val": data["val"],
        "data.crop": 64,
        "data.num_workers": 0,
        "data.shuffle_buffer": 16,
        "model.preset": "tiny",
        "optim.batch_size": 8,
        "optim.lr": 2e-3,
        "optim.ema_decay": 0.9,
        "run.cpu": True,
        "run.output_dir": out,
        "run.log_every": 10,
        "run.val_every": 1000,
        "run.val_samples": 3,
        "run.val_steps": 5,
        "run.debug_state": True,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)


def refused(argv: list[object], capsys) -> str:
    """train.py's entry point run in this process on a run it must refuse (the same code a launch runs, without
    a new interpreter): exit 2, no traceback; returns what it wrote to stderr."""
    from accelerate.state import AcceleratorState

    from promptsr.train_cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    finally:
        AcceleratorState._reset_state(True)  # the next in-process run starts from a fresh state
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_rank_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ddp"
    args = overrides(data, out, **{"optim.max_steps": 60, "run.checkpoint_every": 30, "run.val_every": 60})
    r = run([*LAUNCH_2, str(TRAIN), *args])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def resolved_clip(run_dir) -> str:
    return load_train_config(run_dir / "config.yaml").diffusion.clip


def test_two_gloo_ranks_learn_and_stay_identical(two_rank_run, data):
    rows = metrics(two_rank_run)
    fixed = [r["fixed_loss"] for r in rows if "fixed_loss" in r]
    assert rows[0]["step"] == 0 and len(fixed) >= 3
    assert fixed[-1] < 0.5 * fixed[0], fixed  # the loss on a fixed batch halves within the run
    ranks = [json.loads((two_rank_run / f"final_rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["model"] == ranks[1]["model"]  # DDP kept both ranks' weights equal
    assert json.loads((two_rank_run / "final.json").read_text())["step"] == 60
    logged = {k for r in rows for k in r}
    assert {"loss", "lr", "samples_per_s", "memory_gb", "val_psnr", "val_psnr_bicubic", "val_ssim"} <= logged
    signal = {f"val_eps_{c}{se}" for c in ("true", "empty", "wrong") for se in ("", "_se")}
    assert signal <= logged  # the prompt signal rides along with every validation
    assert resolved_clip(two_rank_run) == "clamp"  # the clip setting is part of the run's config
    assert (two_rank_run / "val" / "step_00000060.png").exists()
    # Validation used the first val_samples samples in key order of ALL the val shards, not rank 0's share.
    import webdataset as wds

    from sr_degrade.shards import shard_files

    keys = sorted(
        r["__key__"] for r in wds.DataPipeline(wds.SimpleShardList(shard_files(data["val"])), wds.tarfile_to_samples())
    )
    validated = json.loads((two_rank_run / "val" / "samples.json").read_text())["keys"]
    assert len(keys) > 3 and validated == keys[:3]
    assert list((two_rank_run / "promptsr").glob("**/events.out.tfevents.*"))  # TensorBoard
    resolved = load_train_config(two_rank_run / "config.yaml")
    assert resolved.optim.max_steps == 60 and resolved.model.preset == "tiny"


def test_a_stopped_run_resumes_with_its_exact_state(data, tmp_path):
    out = tmp_path / "resume"
    base = overrides(data, out, **{"run.checkpoint_every": 10, "run.keep_checkpoints": 2})
    first = run([sys.executable, str(TRAIN), *base, "optim.max_steps=20"])
    assert first.returncode == 0, first.stderr[-3000:]
    (out / "checkpoints" / "step_00000099.tmp").mkdir()  # a save cut short: never a resume point
    second = run([sys.executable, str(TRAIN), *base, "optim.max_steps=30"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr and "at step 20" in second.stdout + second.stderr
    saved = json.loads((out / "checkpoints" / "step_00000020" / "digests.json").read_text())
    loaded = json.loads((out / "resume_check.json").read_text())
    for key in ("step", "model", "optimizer", "lr_scheduler", "ema", "torch_rng", "numpy_rng", "python_rng"):
        assert loaded[key] == saved[key], key
    # No pickle in a checkpoint: the EMA by name in safetensors, the counters in JSON, RNG states in safetensors.
    ckpt = out / "checkpoints" / "step_00000030"
    assert not list((out / "checkpoints").glob("*/*.pkl"))
    assert json.loads((ckpt / "train_state.json").read_text())["step"] == 30
    assert {"ema.safetensors", "rng_0.safetensors", "model.safetensors"} <= {p.name for p in ckpt.iterdir()}
    steps = [r["step"] for r in metrics(out) if "loss" in r]
    assert steps == [10, 20, 30]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000020", "step_00000030"]
    # A damaged newest checkpoint (a truncated file) is skipped with a note; the one before it resumes.
    model_file = ckpt / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    third = run([sys.executable, str(TRAIN), *base, "optim.max_steps=40"])
    assert third.returncode == 0, third.stderr[-3000:]
    assert "skipping" in third.stderr and "model.safetensors is damaged" in third.stderr
    assert "resumed from" in third.stdout and "at step 20" in third.stdout


def test_export_then_load_gives_identical_outputs_and_the_live_embeddings(two_rank_run, tmp_path):
    from safetensors.torch import load_file

    from promptsr.export import export_model, load_model
    from promptsr.unet import build_unet
    from sr_degrade.embed import load_text_encoder

    folder = export_model(two_rank_run, tmp_path / "model")
    model = load_model(folder)
    assert model.meta["ema"] is True and model.meta["trained_steps"] == 60 and model.scale == 4
    # The exported weights are the EMA shadow of the last checkpoint.
    ckpt = two_rank_run / "checkpoints" / "step_00000060"
    ema = load_file(str(ckpt / "ema.safetensors"))
    reference = build_unet("tiny", cross_attention_dim=384)
    raw = load_file(str(ckpt / "model.safetensors"))
    assert set(ema) == {n for n, _ in reference.named_parameters()}  # the EMA by parameter name
    reference.load_state_dict({**raw, **ema})
    assert not torch.equal(ema["conv_in.weight"], raw["conv_in.weight"])  # the EMA is not the raw weights
    assert json.loads((folder / "unet" / "config.json").read_text())["text_encoder"] == model.encoder["id"]
    x = torch.randn(2, 6, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([5, 1500])
    emb = torch.from_numpy(model.lookup("light blur, downsample").astype(np.float32))[None].repeat(2, 1, 1)
    with torch.no_grad():
        assert torch.equal(model.unet(x, t, emb, None), reference.eval()(x, t, emb, None))
    # The table: every prompt equals live encoding (float16 bytes), the empty prompt included.
    encoder = load_text_encoder("minilm")
    prompts = json.loads((folder / "vocabulary.json").read_text())["prompts"]
    assert len(prompts) == 257 and prompts[-1] == ""
    for p in prompts[::16] + [""]:
        assert model.lookup(p).tobytes() == encoder.encode(p).tobytes(), p
    assert model.lookup("[Heavy Blur, upsample, medium noise,  medium compression, downsample]") is not None


def test_config_round_trip_overrides_and_unknown_keys(tmp_path):
    cfg = load_train_config(None, ["optim.lr=1e-4", "data.prompt_formats={original: 0.7, empty: 0.3}"])
    assert cfg.optim.lr == 1e-4 and cfg.data.prompt_formats == {"original": 0.7, "empty": 0.3}
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert load_train_config(tmp_path / "c.yaml") == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert load_train_config(Path(__file__).resolve().parents[1] / "configs" / "promptsr_x4.yaml").optim.lr == 2e-4
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        load_train_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="prompt_formats"):
        load_train_config(None, ["data.prompt_formats={original: 0.5}"])
    with pytest.raises(ConfigError, match="key=value"):
        load_train_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="run.keep_checkpoints"):  # 0 used to keep every checkpoint
        load_train_config(None, ["run.keep_checkpoints=0"])
    with pytest.raises(ConfigError, match="run.tf32"):
        load_train_config(None, ["run.tf32=maybe"])
    assert load_train_config(None, ["run.compile=aot_eager"]).run.compile == "aot_eager"


def test_bad_input_gets_one_message(data, tmp_path, capsys):
    def train(*extra: str) -> str:
        return refused([*overrides(data, tmp_path / "bad"), *extra], capsys)

    assert "unknown config key 'optim.learnrate'" in train("optim.learnrate=1")
    assert "no shards found" in train(f"data.train={tmp_path / 'nothing' / '*.tar'}")
    assert "huge" in train("model.preset=huge")


class _Payload:
    """Unpickling this creates the file named by `path`: what a planted checkpoint file would run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_of_another_preset_or_layout_is_refused_and_never_unpickled(data, tmp_path, capsys):
    out = tmp_path / "other"
    base = overrides(data, out, **{"run.checkpoint_every": 5, "optim.max_steps": 5, "run.val_every": 5})
    first = run([sys.executable, str(TRAIN), *base, "run.tf32=true", "run.compile=no_such_backend"])
    assert first.returncode == 0, first.stderr[-3000:]
    # Speed options this machine cannot use fall back with one notice each, never a crash.
    assert first.stderr.count("note: run.tf32 applies to CUDA devices only") == 1
    assert first.stderr.count("'no_such_backend' is not usable here") == 1
    assert "cannot resume" in refused([*base, "optim.max_steps=10", "model.overrides={base_channels: 24}"], capsys)
    # A checkpoint of the older, pickled layout (or one with a planted pickle) is refused before anything is loaded.
    import pickle

    ckpt = out / "checkpoints" / "step_00000005"
    ran = tmp_path / "payload_ran"
    (ckpt / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Payload(ran)))
    err = refused([*base, "optim.max_steps=10"], capsys)
    assert "older layout" in err and len(err.strip().splitlines()) == 1 and not ran.exists()


def test_non_finite_losses_are_skipped_then_stop_the_run_after_saving(data, tmp_path):
    out = tmp_path / "nan"
    args = overrides(data, out, **{"optim.lr": 1e30, "optim.grad_clip": 0, "optim.max_steps": 200})
    r = run([sys.executable, str(TRAIN), *args, "optim.max_bad_steps=3", "optim.ema_decay=0"])
    assert r.returncode == 2, r.stderr[-2000:]
    assert "non-finite losses in a row" in r.stderr and "Traceback" not in r.stderr
    assert list((out / "checkpoints").iterdir())  # what it had is saved
    final = json.loads((out / "final.json").read_text())
    assert final["status"] == "stopped" and final["step"] < 200


def test_stored_and_live_embeddings_agree(data):
    from sr_degrade.embed import load_text_encoder
    from sr_degrade.shards import open_shards

    encoder = load_text_encoder("minilm")
    for s in list(open_shards(data["train"], mode="eval"))[:6]:
        live = encoder.encode(s.prompt)
        assert live.dtype == s.emb.dtype == np.float16 and np.array_equal(live, s.emb)


def test_prompts_re_rendered_in_other_formats_are_encoded_live(data, tmp_path):
    out = tmp_path / "formats"
    fmts = "data.prompt_formats={simplified: 0.4, empty: 0.3, shuffled: 0.3}"
    args = overrides(data, out, **{"optim.max_steps": 10, "run.checkpoint_every": 10, "data.val": "null"})
    r = run([sys.executable, str(TRAIN), *args, fmts])
    assert r.returncode == 0, r.stderr[-3000:]
    last = [m for m in metrics(out) if "loss" in m][-1]
    assert last["live_prompts"] >= 3 and np.isfinite(last["loss"])


def test_shards_of_another_encoder_are_refused(data, tmp_path, capsys):
    from test_embed import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip", seed=1)
    other_val = tmp_path / "val_clip"
    build(BuildOptions(src="sample", out=other_val, val=True, text_encoder=str(clip), workers=1), progress=False)
    assert "validation shards" in refused(overrides(data, tmp_path / "o1", **{"data.val": other_val}), capsys)
    fmts = "data.prompt_formats={empty: 1.0}"
    err = refused([*overrides(data, tmp_path / "o2", **{"data.text_encoder": clip}), fmts], capsys)
    assert "minilm" in err.lower()


def test_a_second_run_on_the_same_output_dir_is_refused_with_the_holders_pid(data, tmp_path, capsys):
    out = tmp_path / "locked"
    args = [sys.executable, str(TRAIN), *overrides(data, out, **{"optim.max_steps": 100000, "data.val": "null"})]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        for line in first.stdout:  # the lock is held from before resume until the process ends
            if line.startswith("training tiny for"):
                break
        err = refused(args[2:], capsys)
        assert f"in use by process {first.pid}" in err and "training run in" in err
    finally:
        first.kill()
        first.wait()
    # The kernel freed the lock with its holder: a run on that folder starts (and resumes nothing: no checkpoint yet).
    third = run([*args, "optim.max_steps=2", "run.checkpoint_every=2"])
    assert third.returncode == 0, third.stderr[-2000:]


def test_a_run_of_another_prediction_and_target_trains_validates_exports_and_reloads_them(data, tmp_path, capsys):
    from accelerate.state import AcceleratorState

    from promptsr.export import export_model, load_model
    from promptsr.inference import Upscaler
    from promptsr.train_cli import main

    out = tmp_path / "v_residual"
    settings = {"diffusion.prediction": "v_prediction", "diffusion.target": "residual", "diffusion.snr_gamma": 5}
    argv = overrides(data, out, **settings, **{"optim.max_steps": 2, "run.val_every": 2, "run.checkpoint_every": 2})
    try:
        assert main(argv) == 0
    finally:
        AcceleratorState._reset_state(True)
    logged = {k for r in metrics(out) for k in r}
    assert {"val_psnr", "val_eps_true", "val_eps_wrong_minus_true"} <= logged  # sampled and scored, v / residual
    model = load_model(export_model(out, tmp_path / "model"))
    d = model.diffusion
    assert (d.prediction, d.target, d.snr_gamma) == ("v_prediction", "residual", 5)
    lr = (np.random.default_rng(0).random((12, 16, 3)) * 255).astype(np.uint8)
    assert Upscaler(model).upscale(lr, "", steps=2).shape == (48, 64, 3)
    # A folder written before these were settings loads as the paper's epsilon / image, with one notice.
    diffusion_json = tmp_path / "model" / "diffusion.json"
    record = json.loads(diffusion_json.read_text())
    assert record["prediction"] == "v_prediction" and record["target"] == "residual"
    diffusion_json.write_text(json.dumps({k: v for k, v in record.items() if k not in ("prediction", "target")}))
    capsys.readouterr()
    old = load_model(tmp_path / "model")
    notice = capsys.readouterr().err.strip().splitlines()
    assert (old.diffusion.prediction, old.diffusion.target) == ("epsilon", "image")
    assert len(notice) == 1 and "epsilon / image" in notice[0]
    assert "diffusion.prediction" in refused([*overrides(data, tmp_path / "x"), "diffusion.prediction=x0"], capsys)


def test_photos_degraded_afresh_every_epoch_train_a_run_without_shards(data, tmp_path, capsys):
    import itertools

    from accelerate.state import AcceleratorState

    from promptsr.train_cli import main
    from promptsr.train_data import TrainData

    photos = {"data.photos": "sample", "data.text_encoder": "minilm", "data.photo_crop": 64, "data.crops_per_photo": 2}
    cfg = load_train_config(None, overrides(data, tmp_path / "p", **photos))
    samples = list(itertools.islice(TrainData(cfg).loader(8, 0).dataset, 24))
    crops = [int(s.key.rsplit("_c", 1)[1]) for s in samples]
    # 6 photos x 2 crops an epoch: the second epoch brings new crops and degradations (crop indices 2, 3)
    assert sorted(crops[:12]) == [0] * 6 + [1] * 6 and sorted(crops[12:]) == [2] * 6 + [3] * 6
    assert len({s.key for s in samples}) == 24 and len({s.lr.tobytes() for s in samples}) == 24
    assert all(s.hr.shape == (64, 64, 3) and s.lr.shape == (16, 16, 3) and s.emb is None for s in samples)
    # resumed at step 3 (3 x 8 samples = 2 epochs of 12), the stream starts with epoch 2, not epoch 0 again
    assert TrainData(cfg).loader(8, 3).dataset.start == 2

    # configs/gpu_quick.yaml (no GPU has run it yet) at toy size on the CPU: the tiny preset, 64-px crops
    out = tmp_path / "run"
    steps = {"optim.max_steps": 3, "run.val_every": 3, "run.checkpoint_every": 3, "data.train": tmp_path / "none",
             "run.val_crop": 64, "run.mixed_precision": "'no'"}  # fmt: skip
    gpu_quick = Path(__file__).resolve().parents[1] / "configs" / "gpu_quick.yaml"
    try:  # data.train names nothing: it is not read
        assert main(["-c", str(gpu_quick), *overrides(data, out, **photos, **steps)]) == 0
    finally:
        AcceleratorState._reset_state(True)
    assert "data: 6 photos of sample, degraded afresh every epoch of 12 samples" in capsys.readouterr().out
    assert {"val_psnr", "loss"} <= {k for r in metrics(out) for k in r}
    assert load_train_config(out / "config.yaml").data.photos == "sample"
    assert "data.text_encoder" in refused([*overrides(data, out, **photos), "data.text_encoder=null"], capsys)
    assert "nowhere" in refused([*overrides(data, out, **photos), f"data.photos={tmp_path / 'nowhere'}"], capsys)
