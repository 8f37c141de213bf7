"""The prompt normaliser (issue 11, item 5): a user's own words mapped onto the vocabulary, measured
on a paraphrase set written before the rules (tests/data/paraphrases.tsv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sr_degrade.config import DegradationConfig
from sr_degrade.text import NONE, canonical_prompt, normalise_prompt, parse_prompt

DATA = Path(__file__).parent / "data" / "paraphrases.tsv"


def paraphrases() -> list[tuple[str, dict[str, str]]]:
    rows = []
    for line in DATA.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            text, expected = line.split("\t")
            rows.append((text, dict(kv.split("=") for kv in expected.split())))
    return rows


def test_the_paraphrase_set_covers_every_component_and_level():
    rows = paraphrases()
    assert len(rows) >= 40
    seen = {(c, lvl) for _, exp in rows for c, lvl in exp.items()}
    for comp in ("blur", "noise", "jpeg"):
        assert {(comp, lvl) for lvl in ("light", "medium", "heavy", NONE)} <= seen
    assert {("resize1", lvl) for lvl in ("upsample", "downsample", "unchange")} <= seen


def test_accuracy_on_the_paraphrase_set():
    rows = paraphrases()
    wrong = [(t, exp, dict(normalise_prompt(t))) for t, exp in rows if dict(normalise_prompt(t)) != exp]
    accuracy = 1 - len(wrong) / len(rows)
    print(f"normaliser: {len(rows) - len(wrong)}/{len(rows)} paraphrases exactly right ({accuracy:.0%})")
    assert accuracy >= 0.9, wrong


def test_vocabulary_prompts_are_read_exactly():
    for text in ("heavy blur, upsample, medium noise, light compression, downsample", "downsample, downsample"):
        levels = normalise_prompt(text)
        assert levels == {c: v for c, v in parse_prompt(text).items() if c != "resize2"}
        assert canonical_prompt(levels)[0] == text


def test_words_it_cannot_map_are_reported():
    n = normalise_prompt("very blurry, purple tint, wobbly")
    assert dict(n) == {"blur": "heavy"}
    assert set(n.unknown) == {"purple", "tint", "wobbly"}
    assert normalise_prompt("very").unknown == ("very",)


def test_canonical_prompts_are_in_the_papers_order_with_resize2_last():
    levels = normalise_prompt("blocky, grainy, enlarged, very blurry")
    assert canonical_prompt(levels) == ("heavy blur, upsample, medium noise, medium compression, downsample", [])
    # A model trained without omitted ops never saw a missing phrase for "none": the lightest level.
    prompt, notes = canonical_prompt({"blur": NONE, "noise": "heavy", "jpeg": NONE}, omission=False)
    assert prompt == "light blur, heavy noise, light compression, downsample" and len(notes) == 2
    assert canonical_prompt({"blur": NONE, "noise": "heavy"})[0] == "heavy noise, downsample"


def test_numbers_are_binned_with_the_configs_own_edges():
    cfg = DegradationConfig()
    assert normalise_prompt("jpeg quality 31", cfg)["jpeg"] == "heavy"
    assert normalise_prompt("noise sigma 29", cfg)["noise"] == "heavy"
    assert normalise_prompt("blur sigma 0.5", cfg)["blur"] == "light"


@pytest.mark.parametrize("bad", [None, 3])
def test_non_text_is_refused(bad):
    from sr_degrade.errors import PromptError

    with pytest.raises(PromptError):
        normalise_prompt(bad)
