"""Prompts: bins, describe in every format, parse_prompt as its inverse, and the level shares."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sr_degrade import DegradationConfig, PromptError, bins, describe, parse_prompt, sample_params, vocabulary
from sr_degrade.config import LEVELS, RESIZE1_LEVELS
from sr_degrade.params import BlurParams, JpegParams, NoiseParams, Resize1Params
from sr_degrade.text import PROMPT_FORMATS, bin_index, level_of

DEFAULT = DegradationConfig()
FLEXIBLE = DegradationConfig(shuffle_order=True, p_omit={"blur": 0.3, "resize1": 0.3, "noise": 0.3, "jpeg": 0.3})
seeds = st.integers(0, 2**63 - 1)


def draw(n: int, cfg: DegradationConfig = DEFAULT, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sample_params(cfg, rng) for _ in range(n)]


def test_the_papers_example_prompt():
    p = draw(1)[0]
    p = type(p)(
        p.order,
        BlurParams("iso", 21, 2.5, 2.5, 0.0),
        Resize1Params("bicubic", 1.3, False),
        NoiseParams("gaussian", 15.0, False, 1),
        JpegParams(60),
        p.resize2,
    )
    assert describe(p) == "heavy blur, upsample, medium noise, medium compression, downsample"
    assert bins(p) == {
        "blur": "heavy",
        "resize1": "upsample",
        "noise": "medium",
        "jpeg": "medium",
        "resize2": "downsample",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.2, 0), (0.2 + 2.8 / 3 - 1e-9, 0), (0.2 + 2.8 / 3, 1), (0.2 + 5.6 / 3, 2), (3.0, 2), (5.0, 2), (0.0, 0)],
)
def test_bins_are_left_closed_with_the_top_edge_included(value, expected):
    assert bin_index(value, DEFAULT.blur.bin_edges) == expected


def test_jpeg_levels_run_backwards_and_anisotropic_blur_bins_the_mean():
    p = draw(1)[0]
    for q, level in ((30, "heavy"), (51, "heavy"), (52, "medium"), (73, "medium"), (74, "light"), (95, "light")):
        assert level_of("jpeg", type(p)(p.order, p.blur, p.resize1, p.noise, JpegParams(q), p.resize2)) == level
    aniso = BlurParams("aniso", 21, 0.3, 2.9, 1.0)  # mean 1.6: medium, though 2.9 alone is heavy
    assert level_of("blur", type(p)(p.order, aniso, p.resize1, p.noise, p.jpeg, p.resize2)) == "medium"


def test_resize1_levels():
    p = draw(1)[0]
    for r, level in (
        (Resize1Params("area", 1.0, True), "unchange"),
        (Resize1Params("area", 0.5, False), "downsample"),
        (Resize1Params("area", 1.2, False), "upsample"),
    ):
        assert level_of("resize1", type(p)(p.order, p.blur, r, p.noise, p.jpeg, p.resize2)) == level


def test_original_format_follows_the_applied_order():
    for p in draw(300, FLEXIBLE):
        phrases = describe(p, cfg=FLEXIBLE).split(", ")
        assert len(phrases) == len(p.order)
        assert phrases[-1] == "downsample"
        assert parse_prompt(", ".join(phrases)) == bins(p)


@given(seed=seeds, fmt=st.sampled_from(PROMPT_FORMATS), flexible=st.booleans())
def test_parse_of_describe_agrees_with_bins_on_every_phrase_present(seed, fmt, flexible):
    cfg = FLEXIBLE if flexible else DEFAULT
    rng = np.random.default_rng(seed)
    p = sample_params(cfg, rng)
    text = describe(p, fmt, rng=rng, cfg=cfg)
    parsed = parse_prompt(text, cfg=cfg)
    truth = bins(p, cfg)
    assert set(parsed) <= set(truth)
    assert all(truth[c] == level for c, level in parsed.items())
    if fmt == "empty":
        assert text == "" and parsed == {}
    else:
        assert parsed["resize2"] == "downsample"  # never dropped
    if fmt in ("original", "shuffled"):
        assert parsed == truth


def test_shuffled_and_simplified_are_random_but_reproducible():
    p = draw(1)[0]
    shuffled = {describe(p, "shuffled", rng=np.random.default_rng(s)) for s in range(50)}
    assert len(shuffled) > 10
    assert describe(p, "shuffled", rng=np.random.default_rng(3)) == describe(
        p, "shuffled", rng=np.random.default_rng(3)
    )
    lengths = [len(describe(p, "simplified", rng=np.random.default_rng(s)).split(", ")) for s in range(2000)]
    assert min(lengths) == 1 and max(lengths) == 5
    assert np.mean(lengths) == pytest.approx(1 + 4 * 0.5, abs=0.1)  # resize2 + each other with p 0.5


def test_random_formats_need_an_explicit_generator():
    with pytest.raises(ValueError, match="rng"):
        describe(draw(1)[0], "shuffled")
    with pytest.raises(ValueError, match="unknown prompt format"):
        describe(draw(1)[0], "poetic")


def test_every_word_is_reachable():
    seen = collections.defaultdict(set)
    for p in draw(3000, FLEXIBLE):
        for component, level in bins(p, FLEXIBLE).items():
            seen[component].add(level)
        seen["phrases"].update(describe(p, cfg=FLEXIBLE).split(", "))
    for c in ("blur", "noise", "jpeg"):
        assert seen[c] == set(LEVELS)
    assert seen["resize1"] == set(RESIZE1_LEVELS)
    assert seen["phrases"] == set(vocabulary())


def test_level_shares_over_10000_draws_match_the_documented_binning():
    counts = collections.defaultdict(collections.Counter)
    n = 10_000
    for p in draw(n, seed=2024):
        for component, level in bins(p).items():
            counts[component][level] += 1
    share = {c: {lvl: k / n for lvl, k in cnt.items()} for c, cnt in counts.items()}
    for c in ("noise", "jpeg"):
        for lvl in LEVELS:
            assert share[c][lvl] == pytest.approx(1 / 3, abs=0.03), (c, lvl)
    # Blur: half isotropic (sigma uniform: 1/3 each) and half anisotropic, whose binned value is
    # the mean of two uniforms (triangular: 2/9, 5/9, 2/9). Expected 5/18, 8/18, 5/18.
    for lvl, expected in zip(LEVELS, (5 / 18, 8 / 18, 5 / 18)):
        assert share["blur"][lvl] == pytest.approx(expected, abs=0.03), lvl
    # resize1: kept with p 0.1, else gamma1 ~ U[0.15, 1.5], upsample when gamma1 > 1.
    up = 0.9 * (1.5 - 1.0) / 1.35
    for lvl, expected in (("unchange", 0.1), ("upsample", up), ("downsample", 0.9 - up)):
        assert share["resize1"][lvl] == pytest.approx(expected, abs=0.03), lvl
    assert share["resize2"] == {"downsample": 1.0}


@pytest.mark.parametrize(
    "text",
    [
        "[Heavy Blur,  UPSAMPLE , medium noise,medium compression, downsample]",
        "heavy blur, up-sample, medium noise, medium compression, downsample.",
        '"downsample; medium compression; medium noise; upsample; heavy blur"',
        "(medium noise)\n(heavy blur), Medium-Compression, upsample, downsample",
    ],
)
def test_parse_accepts_any_case_order_brackets_and_spacing(text):
    assert parse_prompt(text) == {
        "blur": "heavy",
        "resize1": "upsample",
        "noise": "medium",
        "jpeg": "medium",
        "resize2": "downsample",
    }


def test_the_two_downsample_rule():
    assert parse_prompt("downsample") == {"resize2": "downsample"}
    assert parse_prompt("downsample, light noise, downsample") == {
        "resize1": "downsample",
        "noise": "light",
        "resize2": "downsample",
    }
    assert parse_prompt("unchange, downsample") == {"resize1": "unchange", "resize2": "downsample"}
    with pytest.raises(PromptError, match="two levels"):
        parse_prompt("upsample, downsample, downsample")
    with pytest.raises(PromptError, match="3 times"):
        parse_prompt("downsample, downsample, downsample")


def test_empty_prompt_is_valid():
    for text in ("", "   ", "[]", "[ ]"):
        parsed = parse_prompt(text)
        assert parsed == {} and parsed.unknown == ()


def test_strict_mode_lists_the_whole_vocabulary():
    with pytest.raises(PromptError) as err:
        parse_prompt("light blur, very sharp, downsample")
    message = str(err.value)
    assert "'very sharp'" in message
    assert all(phrase in message for phrase in vocabulary())


def test_lenient_mode_keeps_free_text_with_a_warning():
    with pytest.warns(UserWarning, match="free text"):
        parsed = parse_prompt("light blur, a photo of a cat, downsample", strict=False)
    assert parsed == {"blur": "light", "resize2": "downsample"}
    assert parsed.unknown == ("a photo of a cat",)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_prompt("light blur", strict=False)  # nothing unknown, no warning


def test_conflicting_levels_are_refused():
    with pytest.raises(PromptError, match="blur two levels"):
        parse_prompt("light blur, heavy blur")
    assert parse_prompt("light blur, light blur") == {"blur": "light"}


def test_custom_words_are_used_both_ways():
    cfg = DegradationConfig.from_dict(
        {"noise": {"words": ["little grain", "some grain", "much grain"]}, "resize2": {"word": "shrink"}}
    )
    p = draw(1, cfg)[0]
    text = describe(p, cfg=cfg)
    assert "grain" in text and text.endswith("shrink")
    assert parse_prompt(text, cfg=cfg) == bins(p, cfg)
    # resize1 keeps "downsample", which no longer doubles as resize2's phrase.
    assert parse_prompt("downsample, shrink", cfg=cfg) == {"resize1": "downsample", "resize2": "downsample"}
