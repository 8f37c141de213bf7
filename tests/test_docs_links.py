"""Every relative link in the README, the docs pages and the package READMEs resolves.

A link resolves when its file (or folder) exists and, where it names an `#anchor` in a markdown file,
that file has a heading whose GitHub slug is the anchor. Links to http(s) and mailto, and anything inside
fenced code blocks or inline code, are not links. Also: the README fits on a screen (at most 250 lines)
and links every docs page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the target may be <bracketed> and may carry a "title"
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
EXTERNAL = ("http://", "https://", "mailto:")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lowercase, only letters, digits, spaces,
    hyphens and underscores kept, each space a hyphen (github-slugger's rule)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its target
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w: Unicode letters, digits and the underscore
    return text.replace(" ", "-")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = None
            continue
        if fence is None:
            out.append((number, INLINE_CODE.sub("", line)))
    return out


def anchors(path: Path) -> set[str]:
    """Every anchor a markdown file offers: its headings' slugs (repeats get -1, -2, ...) and HTML anchors."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    fence = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if m:
            fence = m.group(1) if fence is None else (None if m.group(1) == fence else fence)
            continue
        if fence is not None:
            continue
        found.update(HTML_ANCHOR.findall(line))
        h = HEADING.match(line)
        if h:
            slug = github_slug(h.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link in a markdown file. Paragraphs are scanned whole, since a
    link's text may wrap onto the next line."""
    paragraphs: list[list[tuple[int, str]]] = [[]]
    last = 0
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        if not line.strip() or number != last + 1:
            paragraphs.append([])
        if line.strip():
            paragraphs[-1].append((number, line))
        last = number
    out = []
    for para in filter(None, paragraphs):
        text = "\n".join(line for _, line in para)
        found = [(m.start(), m.group(1)) for m in INLINE_LINK.finditer(text)]
        found += [(m.start(), m.group(1)) for m in REFERENCE_DEF.finditer(text)]
        for start, target in sorted(found):
            target = target.strip("<>")
            if not target.lower().startswith(EXTERNAL):
                out.append((para[text.count("\n", 0, start)][0], target))
    return out


def broken(path: Path, root: Path = ROOT) -> list[str]:
    """What does not resolve in one file, as 'file:line: target (why)', paths relative to `root`."""
    root, problems = root.resolve(), []
    for number, target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.resolve().relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where} (no heading with this anchor in {dest.relative_to(root)})")
    return problems


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), *sorted(ROOT.glob("packages/*/README.md"))]


def test_github_slug_of_known_headings():
    assert github_slug("The CPU recipe that beats bicubic (`make small-cpu`)") == (
        "the-cpu-recipe-that-beats-bicubic-make-small-cpu"
    )
    assert github_slug("Prompts for your own photos (`promptsr suggest`, `--prompt auto`, free text)") == (
        "prompts-for-your-own-photos-promptsr-suggest---prompt-auto-free-text"
    )
    assert github_slug("Is the model reading its prompt? (`val_eps_*`)") == "is-the-model-reading-its-prompt-val_eps_"
    assert github_slug("Shards with [Hugging Face](https://huggingface.co) `datasets`") == (
        "shards-with-hugging-face-datasets"
    )


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Measured\n\n```\n## Measured\n```\n\n## Measured\n\n## Measured\n")
    assert anchors(page) == {"notes", "measured", "measured-1", "measured-2"}


def test_a_broken_link_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# There\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Here\n\n[ok](other.md#there) [self](#here) [web](https://example.com/x.md#y) `[code](nowhere.md)`\n"
        "[gone](missing.md) [wrong anchor](other.md#elsewhere) [text that\nwraps](wrapped.md)\n\n"
        "```\n[fenced](nowhere.md)\n```\n"
    )
    assert broken(page, root=tmp_path) == [
        "page.md:4: missing.md (no such file)",
        "page.md:4: other.md#elsewhere (no heading with this anchor in other.md)",
        "page.md:4: wrapped.md (no such file)",
    ]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert broken(path) == []


def test_readme_fits_on_a_screen_and_links_every_docs_page():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)}
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "no docs pages"
    assert [p.name for p in pages if p.resolve() not in linked] == []
