"""The bundled photos: present, readable as RGB, and their licences recorded next to them."""

from __future__ import annotations

import numpy as np
from conftest import photo

from sr_degrade.samples import SAMPLE_NAMES, sample_dir, sample_paths

EXPECTED_SIZES = {  # (H, W) as documented in data/samples/LICENSES.md
    "astronaut": (512, 512),
    "chelsea": (300, 451),
    "coffee": (400, 600),
    "hubble_deep_field": (872, 1000),
    "retina": (1411, 1411),
    "rocket": (427, 640),
}


def test_every_photo_is_bundled_with_its_licence():
    licences = (sample_dir() / "LICENSES.md").read_text()
    paths = sample_paths()
    assert [p.stem for p in paths] == sorted(SAMPLE_NAMES)
    for p in paths:
        assert f"| {p.name} |" in licences, f"{p.name} has no licence row"


def test_photos_read_as_rgb_uint8_of_documented_size():
    for name, size in EXPECTED_SIZES.items():
        img = photo(name)
        assert img.dtype == np.uint8 and img.shape == (*size, 3), name
        # Real colour photos: the channels differ and the values spread.
        assert not np.array_equal(img[..., 0], img[..., 2]), name
        assert img.std() > 10, name
