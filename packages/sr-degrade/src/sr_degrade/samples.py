"""The bundled sample photos: the embedded default source of the demo, the tests and `--src sample`.

Six real photographs shipped inside the package (their origin and licences are in
`data/samples/LICENSES.md`); all are public domain or CC0.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .imageio import read_image

SAMPLE_NAMES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "retina", "rocket")


def sample_dir() -> Path:
    """Folder holding the bundled photos."""
    return Path(str(resources.files("sr_degrade") / "data" / "samples"))


def sample_paths() -> list[Path]:
    """The bundled photos' files, sorted by name."""
    folder = sample_dir()
    return sorted(p for p in folder.iterdir() if p.stem in SAMPLE_NAMES)


def load_sample(name: str) -> np.ndarray:
    """One bundled photo as H x W x 3 uint8 RGB, by name (see SAMPLE_NAMES)."""
    for p in sample_paths():
        if p.stem == name:
            return read_image(p)
    raise KeyError(f"no bundled photo {name!r}; choose one of {list(SAMPLE_NAMES)}")
