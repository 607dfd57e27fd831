"""The Markdown documents link only to files (and headings) the repository has, and nothing in the
repository cites the design notes kept outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").glob("*.md")])
#: Files outside the repository that its text must never cite (built so that this file does not match).
OUTSIDE = ("REFERENCE" + ".md", "ARCHITECTURE" + ".md", "../" + "shared")
SCANNED = (
    "README.md",
    "CHANGELOG.md",
    "Makefile",
    "docs",
    "provider",
    "dags",
    "examples",
    "bench",
    "tests",
    "stack",
)

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"^```.*?^```", re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _CODE.sub("", path.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _links(path: Path) -> list[str]:
    return [m.group(1) for m in _LINK.finditer(_CODE.sub("", path.read_text()))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files_and_headings_of_the_repository(document: Path) -> None:
    broken = []
    for link in _links(document):
        if re.match(r"^[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        relative = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        if not path.is_relative_to(REPO):
            broken.append(f"{link}: outside the repository")
        elif not path.exists():
            broken.append(f"{link}: no file {relative}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {relative}")
    assert not broken, f"{document.name}: " + "; ".join(broken)


def test_no_file_cites_notes_outside_the_repository() -> None:
    this = Path(__file__).resolve()
    citing = []
    for top in SCANNED:
        root = REPO / top
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            if path == this or "__pycache__" in path.parts or path.suffix in (".pyc", ".png"):
                continue
            text = path.read_text(errors="replace")
            citing += [f"{path.relative_to(REPO)}: {name}" for name in OUTSIDE if name in text]
    assert not citing, citing
