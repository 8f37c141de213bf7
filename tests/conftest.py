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
