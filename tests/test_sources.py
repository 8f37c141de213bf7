"""Data sources of the shard builder: folders, list files, the samples, named sources and their manifests.

Every tree is built in tmp_path from the bundled photos (small crops, real encoded files); nothing is mocked.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import yaml
from conftest import photo_crop

from sr_degrade.errors import SourceError
from sr_degrade.imageio import encode_png, write_image
from sr_degrade.samples import sample_paths
from sr_degrade.sources import (
    SourceImage,
    check_manifest,
    holdout_score,
    list_manifests,
    load_manifest,
    manifest_dir,
    open_source,
    split_holdout,
    write_manifest,
)

NAMED = ("DIV2K-val", "LSDIR", "Manga109", "RealSR", "Urban100")


def _img(path: Path, seed: int = 0) -> Path:
    """A small real image file (format from the extension, any case)."""
    write_image(path, photo_crop("astronaut", 13 * seed, 29 * seed, 24, 32))
    return path


def _tree(root: Path, keys: list[str]) -> Path:
    for i, key in enumerate(keys):
        _img(root / key, i)
    return root


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# -- folders ----------------------------------------------------------------------------------------------------


def test_folder_is_recursive_any_case_sorted_and_skips_hidden(tmp_path):
    root = _tree(
        tmp_path / "photos",
        ["b.PNG", "a/z.jpg", "a/deeper/c.JpEg", "a b/space.bmp", "Upper.webp", ".hidden.png", ".cache/d.png"],
    )
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "noext").write_bytes(encode_png(photo_crop("chelsea", 0, 0, 8, 8)))
    src = open_source(str(root))
    keys = [img.key for img in src.images]
    assert keys == ["Upper.webp", "a b/space.bmp", "a/deeper/c.JpEg", "a/z.jpg", "b.PNG"]
    assert src.kind == "folder" and src.name == str(root) and src.split is None and src.root == root
    assert all(img.path == root / img.key and img.path.is_file() for img in src.images)
    assert open_source(str(root)) == src  # same listing on every call
    assert "5 images" in src.describe()


def test_folder_follows_links_and_ends_link_loops(tmp_path):
    outside = _tree(tmp_path / "outside", ["o.png"])
    root = _tree(tmp_path / "root", ["r.png", "sub/s.png"])
    os.symlink(outside, root / "linked")
    os.symlink(root, root / "sub" / "loop")  # back up to the root: must not recurse forever
    os.symlink(root / "r.png", root / "file_link.png")
    os.symlink(root / "gone.png", root / "broken.png")
    keys = [img.key for img in open_source(str(root)).images]
    assert keys == ["file_link.png", "linked/o.png", "r.png", "sub/s.png"]


def test_folder_without_images_is_refused(tmp_path):
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    _img(tmp_path / "empty" / ".hidden" / "x.png")
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path / "empty"))


# -- list files -------------------------------------------------------------------------------------------------


def test_list_file_relative_absolute_comments_and_missing(tmp_path):
    data = _tree(tmp_path / "data", ["x/one.png", "x/two.jpg"])
    far = _tree(tmp_path / "far", ["p/abs1.png", "q/abs2.png"])
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text(
        "# training images\n\n"
        "../data/x/one.png\n"
        "  ../data/./x/two.jpg  \n"
        "..\\data\\x\\gone.png\n"  # a listed file that does not exist stays in the list
        f"{far / 'p' / 'abs1.png'}\n"
        f"{far / 'q' / 'abs2.png'}\n"
        "#../data/x/commented.png\n"
    )
    src = open_source(str(listing))
    by_key = {img.key: img.path for img in src.images}
    assert list(by_key) == sorted(by_key)
    assert by_key == {
        "../data/x/gone.png": data / "x" / "gone.png",
        "../data/x/one.png": data / "x" / "one.png",
        "../data/x/two.jpg": data / "x" / "two.jpg",
        "p/abs1.png": far / "p" / "abs1.png",  # absolute: relative to their common folder
        "q/abs2.png": far / "q" / "abs2.png",
    }
    assert src.kind == "list" and src.root == listing.parent
    assert "(1 not found)" in src.describe()


def test_list_file_with_one_absolute_path_keys_its_name(tmp_path):
    path = _img(tmp_path / "deep" / "er" / "only.png")
    listing = tmp_path / "one.txt"
    listing.write_text(f"{path}\n")
    assert [(i.key, i.path) for i in open_source(str(listing)).images] == [("only.png", path)]


def test_list_file_duplicates_are_refused_with_line_numbers(tmp_path):
    _tree(tmp_path, ["a.png"])
    listing = tmp_path / "dup.txt"
    listing.write_text("a.png\n# comment\n./a.png\n")
    with pytest.raises(SourceError, match=r"more than once: a\.png \(lines 1, 3\)"):
        open_source(str(listing))


def test_empty_list_file_is_refused(tmp_path):
    listing = tmp_path / "empty.txt"
    listing.write_text("# nothing yet\n\n")
    with pytest.raises(SourceError, match="names no images"):
        open_source(str(listing))


# -- sample and dispatch ----------------------------------------------------------------------------------------


def test_sample_source_is_the_bundled_photos():
    src = open_source("sample")
    assert src.kind == "sample" and len(src.images) == 6
    assert [i.key for i in src.images] == sorted(p.name for p in sample_paths())
    assert [i.path for i in src.images] == sample_paths()
    with pytest.raises(SourceError, match="only for named sources"):
        open_source("sample", root="/tmp")


def test_unknown_src_lists_named_sources(tmp_path):
    with pytest.raises(SourceError, match=r"no folder, list file or named source called 'nope'.*LSDIR.*Urban100"):
        open_source("nope")
    with pytest.raises(SourceError, match="only for named sources"):
        open_source(str(tmp_path), root=tmp_path)


# -- named sources ----------------------------------------------------------------------------------------------


@pytest.fixture
def testset(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(manifest path, root) of a small named source: train lists its 3 files, val knows only its count."""
    monkeypatch.delenv("TESTSET_ROOT", raising=False)
    manifest = _write_yaml(
        tmp_path / "testset.yaml",
        {
            "schema": 1,
            "name": "TestSet",
            "homepage": "https://example.org/testset",
            "obtain": "unpack testset.zip",
            "root_env": "TESTSET_ROOT",
            "splits": {
                "train": {
                    "layout": "train/NNN.png",
                    "files": ["001.png", "002.png", "003.png"],
                    "patterns": ["*.png"],
                    "variants": [{"name": "zip", "base": "train"}, {"name": "flat", "base": "."}],
                },
                "val": {"aliases": ["valid"], "count": 2, "layout": "val/*.jpg", "patterns": ["val/*.jpg"]},
            },
        },
    )
    root = _tree(tmp_path / "root", ["train/001.png", "train/002.png", "train/003.png", "val/a.jpg", "val/b.jpg"])
    return manifest, root


def test_named_source_from_root_and_environment(testset, monkeypatch):
    manifest, root = testset
    src = open_source(str(manifest), root=root)
    assert src.kind == "named" and src.name == "TestSet" and src.split == "train" and src.variant == "zip"
    assert [i.key for i in src.images] == ["001.png", "002.png", "003.png"]
    assert src.root == root / "train" and src.images[0].path == root / "train" / "001.png"
    assert src.describe().startswith(f"TestSet split train at {root / 'train'}")
    monkeypatch.setenv("TESTSET_ROOT", str(root))
    val = open_source(str(manifest), split="VALID")  # aliases, any case
    assert val.split == "val" and [i.key for i in val.images] == ["val/a.jpg", "val/b.jpg"]
    # The flat variant (root = the train folder itself) gives the same keys.
    assert [i.key for i in open_source(str(manifest), root=root / "train").images] == [i.key for i in src.images]


def test_named_source_without_root_says_how_to_get_it(testset):
    manifest, _ = testset
    with pytest.raises(SourceError) as e:
        open_source(str(manifest))
    msg = str(e.value)
    assert "TestSet needs --root DIR (or the TESTSET_ROOT environment variable)" in msg
    assert "https://example.org/testset: unpack testset.zip" in msg


def test_named_source_root_that_does_not_exist(testset, monkeypatch):
    manifest, root = testset
    with pytest.raises(SourceError, match=f"root {root / 'nope'} \\(from --root\\) does not exist"):
        open_source(str(manifest), root=root / "nope")
    monkeypatch.setenv("TESTSET_ROOT", str(root / "gone"))
    with pytest.raises(SourceError, match="from TESTSET_ROOT"):
        open_source(str(manifest))


def test_named_source_unknown_split_lists_splits(testset):
    manifest, root = testset
    with pytest.raises(SourceError, match=r"TestSet has no split 'test'; its splits: train, val \(or valid\)"):
        open_source(str(manifest), root=root, split="test")


def test_named_source_mismatch_names_missing_and_extra(testset):
    manifest, root = testset
    (root / "train" / "002.png").unlink()
    _img(root / "train" / "004.png")
    with pytest.raises(SourceError) as e:
        open_source(str(manifest), root=root)
    msg = str(e.value)
    assert "expected 3 images, found 3" in msg
    assert "missing 1: 002.png" in msg and "not in the manifest 1: 004.png" in msg
    assert f"sr-degrade manifest --src TestSet --root {root}" in msg
    # Unchecked, the copy opens as it is.
    assert [i.key for i in open_source(str(manifest), root=root, check=False).images] == [
        "001.png",
        "003.png",
        "004.png",
    ]


def test_named_source_count_only_mismatch(testset):
    manifest, root = testset
    (root / "val" / "b.jpg").unlink()
    with pytest.raises(SourceError, match="expected 2 images, found 1"):
        open_source(str(manifest), root=root, split="val")
    (root / "val" / "a.jpg").unlink()
    with pytest.raises(SourceError, match="no images found; expected layout: val/\\*.jpg"):
        open_source(str(manifest), root=root, split="val", check=False)


def test_bundled_manifests_are_found_by_name_in_any_case():
    assert list_manifests() == list(NAMED)
    assert (manifest_dir() / "lsdir.yaml").is_file()  # the package's manifests link reaches data_manifests
    for name in NAMED:
        m = load_manifest(name.upper())
        assert m.name == name and m.homepage.startswith("http") and m.root_env.endswith("_ROOT")
        assert m.splits and all(s.layout and s.variants for s in m.splits)
    lsdir = load_manifest("lsdir")
    assert [(s.name, s.count) for s in lsdir.splits] == [("train", 84991), ("val", 250)]
    keys = lsdir.split("train").variants[0].expected_keys()
    assert keys[0] == "0001000/0000001.png" and keys[999:1001] == ["0001000/0001000.png", "0002000/0001001.png"]
    assert keys[-1] == "0085000/0084991.png" and len(set(keys)) == 84991
    assert [s.count for s in load_manifest("realsr").splits] == [None, None]  # unknown, said so in its notes


def test_lsdir_manifest_on_a_partial_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("LSDIR_ROOT", raising=False)
    with pytest.raises(SourceError, match="LSDIR needs --root DIR \\(or the LSDIR_ROOT environment variable\\)"):
        open_source("LSDIR")
    root = _tree(tmp_path / "LSDIR", ["0001000/0000001.png", "0001000/0000001x4.png", "val1/HR/val/0000001.png"])
    with pytest.raises(SourceError, match=r"expected 84,991 images, found 1; missing 84,990: 0001000/0000002.png"):
        open_source("LSDIR", root=root)
    src = open_source("lsdir", root=root, check=False)  # the LR-named file is not taken for an HR image
    assert [i.key for i in src.images] == ["0001000/0000001.png"] and src.variant == "archives unpacked in the root"
    assert [i.key for i in open_source("LSDIR", root=root, split="val", check=False).images] == ["0000001.png"]


def test_div2k_manifest_accepts_both_layouts_with_the_same_keys(tmp_path):
    png = encode_png(photo_crop("coffee", 0, 0, 16, 16))
    folder = tmp_path / "DIV2K" / "DIV2K_valid_HR"
    folder.mkdir(parents=True)
    for i in range(801, 901):
        (folder / f"{i:04d}.png").write_bytes(png)
    a = open_source("div2k-val", root=tmp_path / "DIV2K", split="val")
    b = open_source("DIV2K-val", root=folder, split="valid")
    assert [i.key for i in a.images] == [i.key for i in b.images] == [f"{i:04d}.png" for i in range(801, 901)]
    assert a.variant != b.variant and a.images[0].path == b.images[0].path


def test_malformed_manifests_are_refused_naming_the_field(tmp_path):
    base = {"name": "Bad", "splits": {"train": {"patterns": ["*.png"]}}}
    load_manifest(_write_yaml(tmp_path / "ok.yaml", base))  # the minimal form loads
    bad = {
        "unknown fields \\['colour'\\]": {**base, "colour": "red"},
        "may only use the fields": {
            **base,
            "splits": {"t": {"patterns": ["*"], "files": {"format": "{i.real}", "first": 1, "last": 2}}},
        },
        "must be relative": {**base, "splits": {"t": {"patterns": ["../*.png"]}}},
        "count must be": {**base, "splits": {"t": {"patterns": ["*"], "count": -1}}},
        "lists 1 files but the split's count is 2": {
            **base,
            "splits": {"t": {"patterns": ["*"], "count": 2, "files": ["a.png"]}},
        },
    }
    for i, (message, data) in enumerate(bad.items()):
        with pytest.raises(SourceError, match=message):
            load_manifest(_write_yaml(tmp_path / f"bad{i}.yaml", data))
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SourceError, match="not valid YAML"):
        load_manifest(tmp_path / "broken.yaml")


# -- holdout ----------------------------------------------------------------------------------------------------


def test_holdout_score_is_fixed_by_the_key():
    keys = [f"HR/train/{i // 1000 * 1000 + 1000:07d}/{i:07d}.png" for i in range(1, 2001)]
    scores = [holdout_score(k) for k in keys]
    assert scores == [holdout_score(k) for k in keys]
    assert all(0.0 <= s < 1.0 for s in scores) and len(set(scores)) == len(scores)
    # Pinned: a change of the formula would silently move images between train and holdout.
    assert holdout_score("0001000/0000001.png") == pytest.approx(0.0503646473, abs=1e-9)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5])
def test_split_holdout_fraction_disjoint_complete(fraction):
    images = [SourceImage(f"dir{i % 7}/img_{i:05d}.png", Path(f"/x/{i}.png")) for i in range(2000)]
    kept, held = split_holdout(images, fraction)
    assert len(held) == pytest.approx(fraction * 2000, abs=60)  # binomial sd at 0.5 is ~22
    assert {i.key for i in kept}.isdisjoint(i.key for i in held)
    assert sorted(kept + held, key=images.index) == images  # complete, and each side keeps the input order
    assert kept == [i for i in images if i in kept] and held == [i for i in images if i in held]
    if fraction:
        assert set(split_holdout(images, fraction / 2)[1]) <= set(held)  # a smaller holdout is a subset


@pytest.mark.parametrize("fraction", [1.0, -0.01, math.nan, "0.1"])
def test_split_holdout_rejects_bad_fractions(fraction):
    with pytest.raises(SourceError, match="holdout fraction must be in"):
        split_holdout([], fraction)


# -- check and write manifests ----------------------------------------------------------------------------------


def _bad_tree(root: Path) -> Path:
    _tree(root, ["good/a.png", "good/b.jpg", "good/c.png", "z.png"])
    data = encode_png(photo_crop("rocket", 0, 0, 40, 40))
    (root / "good" / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "notes.jpg").write_text("a text file with an image's name\n")
    return root


def test_check_manifest_decodes_and_finds_broken_files_with_any_worker_count(tmp_path):
    root = _bad_tree(tmp_path / "data")
    out = tmp_path / "mine.yaml"
    written = write_manifest(root, out, "Mine", decode=True, progress=False)
    assert {k for k, _ in written.split("train").unreadable} == {"good/truncated.png", "notes.jpg"}
    plain = check_manifest(str(out), root, progress=False)
    assert plain.ok and plain.found == plain.expected == 6 and plain.unreadable == []
    one = check_manifest(str(out), root, split="train", decode=True, workers=1, progress=False)
    two = check_manifest(str(out), root, split="train", decode=True, workers=2, progress=False)
    assert one == two
    assert not one.ok and one.splits[0].decoded == 6 and one.missing == [] and one.extra == []
    assert [k for k, _ in one.unreadable] == ["good/truncated.png", "notes.jpg"]
    for key, reason in one.unreadable:
        assert key.rsplit("/", 1)[-1] in reason
    text = one.summary()
    assert "does NOT match" in text and "2 unreadable" in text and "notes.jpg" in text


def test_check_manifest_summary_cuts_long_lists(testset):
    manifest, root = testset
    for i in range(4, 20):
        _img(root / "train" / f"{i:03d}.png", i)
    report = check_manifest(str(manifest), root, split="train", progress=False)
    assert not report.ok and report.found == 19 and len(report.extra) == 16
    text = report.summary(limit=3)
    assert "not in the manifest 16:" in text and "... and 13 more" in text and "019.png" not in text


def test_write_manifest_round_trip(tmp_path, monkeypatch):
    root = _tree(tmp_path / "my photos", ["a.png", "sub/b.JPG", "sub/deeper/c.jpeg"])
    out = tmp_path / "manifests" / "my-photos.yaml"
    written = write_manifest(root, out, "My-Photos", split="val", progress=False)
    loaded = load_manifest(str(out))
    assert loaded == written and loaded.root_env == "MY_PHOTOS_ROOT"
    assert loaded.split("val").count == 3 and loaded.split("val").variants[0].files == (
        "a.png",
        "sub/b.JPG",
        "sub/deeper/c.jpeg",
    )
    monkeypatch.setenv("MY_PHOTOS_ROOT", str(root))
    named = open_source(str(out), split="val")
    assert [(i.key, i.path) for i in named.images] == [(i.key, i.path) for i in open_source(str(root)).images]
    _img(root / "sub" / "new.png")
    with pytest.raises(SourceError, match="not in the manifest 1: sub/new.png"):
        open_source(str(out), split="val")
    with pytest.raises(SourceError, match="not a folder"):
        write_manifest(tmp_path / "nope", out, "X")
