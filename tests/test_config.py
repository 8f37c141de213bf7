"""DegradationConfig: the design's defaults, validation naming field and rule, YAML/JSON round trips."""

from __future__ import annotations

import json
import math

import pytest

from sr_degrade import ConfigError, DegradationConfig


def test_defaults_are_the_papers_settings():
    cfg = DegradationConfig()
    assert cfg.scale == 4 and cfg.order == ("blur", "resize1", "noise", "jpeg") and not cfg.shuffle_order
    assert cfg.p_omit == {"blur": 0.0, "resize1": 0.0, "noise": 0.0, "jpeg": 0.0}
    assert cfg.blur.kinds == {"iso": 0.5, "aniso": 0.5}
    assert cfg.blur.kernel_sizes == (7, 9, 11, 13, 15, 17, 19, 21)
    assert cfg.blur.sigma == (0.2, 3.0) and cfg.blur.rotation == (0.0, math.pi)
    assert cfg.resize1.modes == {"area": 0.3, "bilinear": 0.4, "bicubic": 0.3}
    assert cfg.resize1.p_keep == 0.1 and cfg.resize1.factor == (0.15, 1.5)
    assert cfg.noise.kinds == {"gaussian": 0.5, "poisson": 0.5} and cfg.noise.p_gray == 0.4
    assert cfg.noise.gaussian_sigma == (1.0, 30.0) and cfg.noise.poisson_scale == (0.05, 3.0)
    assert cfg.jpeg.quality == (30, 95)
    assert cfg.resize2.modes == {"area": 0.3, "bilinear": 0.4, "bicubic": 0.3}


def test_bin_edges_default_to_equal_thirds():
    cfg = DegradationConfig()
    assert cfg.blur.bin_edges == pytest.approx((0.2, 0.2 + 2.8 / 3, 0.2 + 5.6 / 3, 3.0))
    assert cfg.noise.gaussian_bin_edges == pytest.approx((1.0, 1 + 29 / 3, 1 + 58 / 3, 30.0))
    assert cfg.noise.poisson_bin_edges == pytest.approx((0.05, 0.05 + 2.95 / 3, 0.05 + 5.9 / 3, 3.0))
    assert cfg.jpeg.bin_edges == pytest.approx((30, 30 + 65 / 3, 30 + 130 / 3, 95))


def test_dict_yaml_and_json_round_trips(tmp_path):
    cfg = DegradationConfig.from_dict(
        {"scale": 2, "shuffle_order": True, "p_omit": {"blur": 0.25}, "noise": {"p_gray": 0.1}}
    )
    assert cfg.scale == 2 and cfg.p_omit["blur"] == 0.25 and cfg.noise.p_gray == 0.1
    assert DegradationConfig.from_dict(cfg.to_dict()) == cfg
    for name in ("cfg.yaml", "cfg.json"):
        cfg.dump(tmp_path / name)
        assert DegradationConfig.load(tmp_path / name) == cfg
    json.loads((tmp_path / "cfg.json").read_text())  # really JSON


def test_partial_file_overrides_only_what_it_names(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("jpeg:\n  quality: [50, 90]\nresize1:\n  modes: {bicubic: 1.0}\n")
    cfg = DegradationConfig.load(path)
    assert cfg.jpeg.quality == (50, 90) and cfg.jpeg.bin_edges[0] == 50
    assert cfg.resize1.modes == {"bicubic": 1.0}
    assert cfg.blur == DegradationConfig().blur


def test_choice_order_in_a_file_does_not_change_sampling():
    a = DegradationConfig.from_dict({"resize2": {"modes": {"bicubic": 0.3, "area": 0.3, "bilinear": 0.4}}})
    assert list(a.resize2.modes) == ["area", "bilinear", "bicubic"]
    assert a == DegradationConfig()


@pytest.mark.parametrize(
    ("data", "field", "rule"),
    [
        ({"blur": {"sigma": [3.0, 0.2]}}, "blur.sigma", "lo < hi"),
        ({"blur": {"kinds": {"iso": 0.5, "aniso": 0.6}}}, "blur.kinds", "sum to 1"),
        ({"blur": {"kernel_sizes": [7, 8]}}, "blur.kernel_sizes", "odd"),
        ({"blur": {"words": ["soft", "hard"]}}, "blur.words", "exactly 3"),
        ({"noise": {"p_gray": 1.5}}, "noise.p_gray", "[0, 1]"),
        ({"noise": {"kinds": {"speckle": 1.0}}}, "noise.kinds", "unknown choice"),
        ({"jpeg": {"quality": [30, 120]}}, "jpeg.quality", "<= 100"),
        ({"jpeg": {"bin_edges": [30, 60, 50, 95]}}, "jpeg.bin_edges", "ascending"),
        ({"resize1": {"factor": [0.5]}}, "resize1.factor", "two numbers"),
        ({"p_omit": {"resize2": 0.5}}, "p_omit", "never"),
        ({"order": ["blur", "noise", "jpeg"]}, "order", "exactly once"),
        ({"scale": 0}, "scale", "integer >= 1"),
        ({"noise": {"words": ["light blur", "b", "c"]}}, "words", "used by both"),
    ],
)
def test_invalid_values_name_the_field_and_the_rule(data, field, rule):
    with pytest.raises(ConfigError) as err:
        DegradationConfig.from_dict(data)
    assert field in str(err.value) and rule in str(err.value)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"blur": {"sigmaa": [1, 2]}}, "unknown config key 'blur.sigmaa'"),
        ({"colour": 1}, "unknown config key 'colour'"),
        ({"blur": {"sigma": "wide"}}, "'blur.sigma' must be a list"),
        ({"shuffle_order": "yes"}, "'shuffle_order' must be true or false"),
        ({"scale": 2.5}, "'scale' must be an integer"),
        ({"blur": [1, 2]}, "'blur' must be a mapping"),
    ],
)
def test_unknown_keys_and_wrong_types_are_named(data, needle):
    with pytest.raises(ConfigError) as err:
        DegradationConfig.from_dict(data)
    assert needle in str(err.value)


def test_bad_files_are_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        DegradationConfig.load(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("blur: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        DegradationConfig.load(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text("noise:\n  gaussian_sigma: [40, 30]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*noise\.gaussian_sigma"):
        DegradationConfig.load(bad)


def test_config_is_frozen():
    cfg = DegradationConfig()
    with pytest.raises(AttributeError):
        cfg.scale = 2  # type: ignore[misc]
