"""Every relative link of README.md and docs/*.md resolves inside the repository.

A link to a file must name a file (or folder) that exists, inside the repository tree; a link with an
``#anchor`` into a Markdown file must name one of its headings, slugged as GitHub slugs them. Links to
web pages (``https://...``) are not followed.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and ![alt](target); the target ends at whitespace or ")" (an optional "title" after it).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[str]:
    """The lines of ``text`` outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        lines.append("" if fenced else CODE_SPAN.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters of every script, digits and _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes for ``path``'s headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    return [(i, m.group(1)) for i, line in enumerate(_prose(path.read_text(encoding="utf-8")), 1)
            for m in LINK.finditer(line)]


def test_slug_matches_github() -> None:
    # Worked by hand from GitHub's rule on headings of these pages.
    assert slug("Continuing a run: `--resume`") == "continuing-a-run---resume"
    assert slug("Pictures and comparisons: `hitdet plot`, `hitdet compare`") == (
        "pictures-and-comparisons-hitdet-plot-hitdet-compare")
    assert slug("The search against random samples (2026-11-30)") == "the-search-against-random-samples-2026-11-30"
    assert slug("α travels") == "α-travels"
    assert slug("Screening mode") == "screening-mode"


def test_the_link_pattern_finds_links_and_skips_code() -> None:
    text = "see [a](docs/a.md#x) and ![p](images/p.png) `[no](b.md)`\n```\n[no](c.md)\n```\n[w](https://x.org)"
    found = [m.group(1) for line in _prose(text) for m in LINK.finditer(line)]
    assert found == ["docs/a.md#x", "images/p.png", "https://x.org"]


def test_there_are_documents_to_check() -> None:
    assert (ROOT / "README.md") in DOCS and len(DOCS) > 5
    assert sum(len(links(p)) for p in DOCS) > 20


def problems(doc: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of ``doc`` that does not resolve to a file (and heading) inside ``root``."""
    out = []
    for line, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...: not a file of ours
            if target.lower().startswith("file:"):
                out.append(f"{doc.name}:{line}: {target}: a file: URL")
            continue
        path_part, _, anchor = target.partition("#")
        if path_part.startswith("/"):
            out.append(f"{doc.name}:{line}: {target}: an absolute path")
            continue
        dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        if not dest.is_relative_to(root):
            out.append(f"{doc.name}:{line}: {target}: outside the repository")
        elif not dest.exists():
            out.append(f"{doc.name}:{line}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            out.append(f"{doc.name}:{line}: {target}: no heading with anchor #{anchor} in {dest.name}")
    return out


def test_the_checker_reports_each_kind_of_bad_link(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# Title\n\n## Some `code` here\n", encoding="utf-8")
    (tmp_path / "outside.md").write_text("# Out\n", encoding="utf-8")
    doc = root / "docs" / "b.md"
    doc.write_text("\n".join([
        "# B",
        "[ok](a.md) [ok](a.md#title) [ok](a.md#some-code-here) [ok](#b) [ok](../docs/a.md) [w](https://x.org/y)",
        "[missing](c.md)",
        "[anchor](a.md#nope)",
        "[out](../../outside.md)",
        "[abs](/etc/passwd)",
        "[url](file:///etc/passwd)",
    ]), encoding="utf-8")
    found = problems(doc, root.resolve())
    assert [p.split(": ")[0] for p in found] == ["b.md:3", "b.md:4", "b.md:5", "b.md:6", "b.md:7"]
    assert "no such file" in found[0] and "#nope" in found[1] and "outside the repository" in found[2]
    assert "absolute path" in found[3] and "file: URL" in found[4]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    found = problems(doc)
    assert not found, "\n".join(found)


def test_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


def test_every_docs_page_is_linked() -> None:
    """Each docs/*.md page is reached from the README or from another page."""
    linked = set()
    for doc in DOCS:
        for _, target in links(doc):
            path_part = target.partition("#")[0]
            if path_part and not re.match(r"^[a-z][a-z0-9+.-]*:", path_part, re.I):
                dest = (doc.parent / unquote(path_part)).resolve()
                if dest != doc:
                    linked.add(dest)
    orphans = [p.name for p in DOCS[1:] if p.resolve() not in linked]
    assert not orphans, f"not linked from README.md or another docs page: {orphans}"


def test_docs_do_not_point_at_readme_sections() -> None:
    """The README is a front door: reference lives in docs/, so no page sends a reader to a README section."""
    stale = [f"{p.name}:{i}" for p in DOCS[1:] for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"README's\s*$|README's \"|README, \"", line)]
    assert not stale, f"pages that point at a README section (link the docs page instead): {stale}"
