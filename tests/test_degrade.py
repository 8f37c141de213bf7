"""sample_params + degrade: exact LR size, determinism, flexible formats, records, bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import photo, photo_crop
from hypothesis import given
from hypothesis import strategies as st

from sr_degrade import DegradationConfig, DegradationParams, ImageError, crop_to_scale, degrade, sample_params
from sr_degrade.params import Resize2Params, sample_rng
from sr_degrade.samples import SAMPLE_NAMES

DEFAULT = DegradationConfig()
seeds = st.integers(0, 2**63 - 1)


@given(seed=seeds, name=st.sampled_from(SAMPLE_NAMES), h=st.integers(4, 160), w=st.integers(4, 160))
def test_lr_is_exactly_hr_over_scale_and_uint8(seed, name, h, w):
    hr = photo_crop(name, seed % 997, seed % 991, h, w)
    lr = degrade(hr, sample_params(DEFAULT, np.random.default_rng(seed)))
    assert lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3) and lr.dtype == np.uint8


@given(seed=seeds, extra_h=st.integers(1, 3), extra_w=st.integers(0, 3))
def test_sides_not_divisible_by_the_scale_use_the_top_left_multiple(seed, extra_h, extra_w):
    hr = photo_crop("coffee", 100, 200, 96 + extra_h, 128 + extra_w)
    params = sample_params(DEFAULT, np.random.default_rng(seed))
    lr = degrade(hr, params)
    assert lr.shape == (24, 32, 3)
    assert crop_to_scale(hr, 4).shape == (96, 128, 3)
    assert np.array_equal(lr, degrade(crop_to_scale(hr, 4), params))


@given(seed=seeds, name=st.sampled_from(SAMPLE_NAMES))
def test_same_seed_same_bytes_whatever_ran_before(seed, name):
    hr = photo_crop(name, seed % 1000, seed % 1003, 128, 128)
    p1 = sample_params(DEFAULT, np.random.default_rng(seed))
    lr1 = degrade(hr, p1)
    # Unrelated draws from other generators and from numpy's global state in between.
    other = np.random.default_rng(seed + 1)
    degrade(photo_crop("astronaut", 0, 0, 64, 64), sample_params(DEFAULT, other))
    np.random.seed(seed % 2**32)  # noqa: NPY002 - global state must not matter
    np.random.random(100)  # noqa: NPY002
    p2 = sample_params(DEFAULT, np.random.default_rng(seed))
    assert p1 == p2
    assert degrade(hr, p2).tobytes() == lr1.tobytes()


def test_sample_generator_depends_on_seed_key_and_crop_only():
    a = sample_params(DEFAULT, sample_rng(7, "dir/photo.png", 2))
    assert a == sample_params(DEFAULT, sample_rng(7, "dir/photo.png", 2))
    assert a != sample_params(DEFAULT, sample_rng(7, "dir/photo.png", 3))
    assert a != sample_params(DEFAULT, sample_rng(8, "dir/photo.png", 2))
    assert a != sample_params(DEFAULT, sample_rng(7, "dir/other.png", 2))


def test_default_order_is_fixed_and_all_ops_apply():
    for seed in range(200):
        p = sample_params(DEFAULT, np.random.default_rng(seed))
        assert p.order == ("blur", "resize1", "noise", "jpeg", "resize2")
        assert p.omitted == ()


def test_shuffle_order_reaches_every_permutation_and_keeps_resize2_last():
    cfg = DegradationConfig(shuffle_order=True)
    orders = {sample_params(cfg, np.random.default_rng(s)).order for s in range(2000)}
    assert {o[:4] for o in orders} == set(itertools.permutations(("blur", "resize1", "noise", "jpeg")))
    assert all(o[-1] == "resize2" for o in orders)


def test_flexible_options_change_no_other_parameter():
    flexible = DegradationConfig(shuffle_order=True, p_omit={"blur": 0.5, "jpeg": 0.5})
    for seed in range(100):
        fixed = sample_params(DEFAULT, np.random.default_rng(seed))
        flex = sample_params(flexible, np.random.default_rng(seed))
        for op in flex.order:
            assert getattr(flex, op) == getattr(fixed, op)


def test_omission_probabilities_are_honoured():
    cfg = DegradationConfig(p_omit={"blur": 1.0, "noise": 0.5})
    draws = [sample_params(cfg, np.random.default_rng(s)) for s in range(2000)]
    assert all(p.blur is None and "blur" not in p.order for p in draws)
    share = np.mean([p.noise is None for p in draws])
    assert 0.45 < share < 0.55
    assert all(p.resize2 is not None and p.order[-1] == "resize2" for p in draws)


def test_order_changes_the_result_on_a_real_photo():
    hr = photo_crop("chelsea", 20, 100, 128, 128)
    p = sample_params(DEFAULT, np.random.default_rng(11))
    swapped = DegradationParams(
        ("jpeg", "noise", "resize1", "blur", "resize2"), p.blur, p.resize1, p.noise, p.jpeg, p.resize2
    )
    assert not np.array_equal(degrade(hr, p), degrade(hr, swapped))


def test_only_resize2_at_scale_one_is_the_identity(any_photo):
    params = DegradationParams(("resize2",), None, None, None, None, Resize2Params("bicubic", 1))
    assert np.array_equal(degrade(any_photo, params), any_photo)


def test_each_op_degrades_a_real_photo():
    hr = photo("astronaut")
    base = sample_params(DEFAULT, np.random.default_rng(5))
    clean = DegradationParams(("resize2",), None, None, None, None, base.resize2)
    ref = degrade(hr, clean).astype(np.int16)
    for op in ("blur", "noise", "jpeg"):
        one = DegradationParams(
            (op, "resize2"),
            **{
                k: getattr(base, k) if k in (op, "resize2") else None
                for k in ("blur", "resize1", "noise", "jpeg", "resize2")
            },
        )
        assert np.abs(degrade(hr, one).astype(np.int16) - ref).mean() > 0.5, op


@given(seed=seeds)
def test_params_json_round_trip_reproduces_the_same_lr(seed):
    cfg = DegradationConfig(shuffle_order=True, p_omit={"resize1": 0.3})
    hr = photo_crop("rocket", seed % 300, seed % 500, 96, 96)
    p = sample_params(cfg, np.random.default_rng(seed))
    back = DegradationParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p
    assert np.array_equal(degrade(hr, back), degrade(hr, p))


def test_draw_values_lie_in_the_configured_ranges():
    for seed in range(500):
        p = sample_params(DEFAULT, np.random.default_rng(seed))
        assert p.blur.kernel_size in DEFAULT.blur.kernel_sizes
        assert 0.2 <= p.blur.sigma_x < 3.0 and 0.2 <= p.blur.sigma_y < 3.0
        if p.blur.kind == "iso":
            assert p.blur.sigma_x == p.blur.sigma_y and p.blur.theta == 0.0
        assert 0 <= p.blur.theta < np.pi
        assert p.resize1.factor == 1.0 if p.resize1.kept else 0.15 <= p.resize1.factor < 1.5
        lo, hi = DEFAULT.noise.gaussian_sigma if p.noise.kind == "gaussian" else DEFAULT.noise.poisson_scale
        assert lo <= p.noise.level < hi
        assert 30 <= p.jpeg.quality <= 95 and isinstance(p.jpeg.quality, int)
        assert p.resize2.scale == 4


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (np.zeros((64, 64), np.uint8), "shape (64, 64)"),
        (np.zeros((64, 64, 4), np.uint8), "shape (64, 64, 4)"),
        (np.zeros((64, 64, 3), np.uint16), "dtype uint16"),
        (np.zeros((64, 64, 3), np.float32), "dtype float32"),
        (np.zeros((0, 0, 3), np.uint8), "smaller than the scale"),
        (np.zeros((3, 64, 3), np.uint8), "smaller than the scale"),
        ([[1, 2, 3]], "got list"),
    ],
)
def test_bad_arrays_raise_one_clear_error(bad, needle):
    with pytest.raises(ImageError) as err:
        degrade(bad, sample_params(DEFAULT, np.random.default_rng(0)))
    assert needle in str(err.value)
