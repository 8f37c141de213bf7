"""Shared fixtures: the bundled real photos, and a hypothesis profile sized for 2-core CI."""

from __future__ import annotations

import os

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
