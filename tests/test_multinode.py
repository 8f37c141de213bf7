"""Training across two nodes, as a cluster runs it: two `accelerate launch --num_machines 2` commands (one per
machine rank, here both on this machine over loopback, gloo on the CPU), both streaming their shards from the
S3 server. Each rank runs the same steps, the checkpoint is written once, a second launch resumes from it,
and both commands end, cleanly, together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from s3server import BUCKET, free_port

from sr_degrade import storage

BIN = Path(sys.executable).parent
TRAIN = Path(__file__).resolve().parents[1] / "packages" / "promptsr-model" / "train.py"
#: The most a two-step launch may take here, start-up included (it takes about 15 s on 2 busy cores);
#: a rank left waiting in the rendezvous store would take about 300 s.
BOUND = 240


def launch_two_nodes(overrides: list[str], env: dict[str, str]) -> list[tuple[int, str, float]]:
    """Both machine ranks' `accelerate launch`, started together; (exit code, output, seconds) of each."""
    port = free_port()
    procs = []
    started = time.monotonic()
    for rank in (0, 1):
        cmd = [
            str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
            "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "--same_network", "--rdzv_backend", "static", "--mixed_precision", "no", "--dynamo_backend", "no",
            str(TRAIN), *overrides,
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, BOUND - (time.monotonic() - started)))
            results.append((p.returncode, out, time.monotonic() - started))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def test_two_nodes_stream_from_s3_train_the_same_steps_and_resume(s3, val_shards, tmp_path):
    url = f"s3://{BUCKET}/nodes/"
    storage.copy_folder(val_shards, url)
    out = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    settings = {
        "data.train": url, "data.val": url, "data.crop": 32, "data.num_workers": 1, "data.shuffle_buffer": 4,
        "model.preset": "tiny", "optim.batch_size": 4, "optim.ema_decay": 0, "run.cpu": True, "run.output_dir": out,
        "run.log_every": 1, "run.checkpoint_every": 2, "run.val_every": 1000, "run.val_samples": 2,
        "run.debug_state": True,
    }  # fmt: skip
    base = [f"{k}={v}" for k, v in settings.items()]

    first = launch_two_nodes([*base, "optim.max_steps=2"], env)
    for code, text, _ in first:
        assert code == 0, text[-3000:]
    assert abs(first[0][2] - first[1][2]) < 30  # both ranks ended together: none left waiting on the other
    ranks = [json.loads((out / f"final_rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["step"] for r in ranks] == [2, 2] and ranks[0]["model"] == ranks[1]["model"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000002"]  # one checkpoint, for both
    ckpt = out / "checkpoints" / "step_00000002"
    assert {"model.safetensors", "rng_0.safetensors", "rng_1.safetensors"} <= {p.name for p in ckpt.iterdir()}
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2]  # one line per step: only the main process writes

    second = launch_two_nodes([*base, "optim.max_steps=3"], env)
    for code, text, _ in second:
        assert code == 0, text[-3000:]
    assert "resumed from" in second[0][1] and "at step 2" in second[0][1]
    ranks = [json.loads((out / f"final_rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["step"] for r in ranks] == [3, 3] and ranks[0]["model"] == ranks[1]["model"]
    assert json.loads((out / "final.json").read_text()) == {"status": "complete", "step": 3}
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2, 3]
