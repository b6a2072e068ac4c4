"""The docs stand on their own: every relative link in README.md and docs/*.md
names a file inside the repository (and the sdist), and the README opens with
how to install and the two make commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.S | re.M)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    out = set()
    for title in re.findall(r"^#+\s+(.*)$", _CODE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_stay_inside_the_repository(page: Path) -> None:
    """No link leaves the repository (`../shared/...`), and each one exists, anchor too."""
    text = _CODE.sub("", page.read_text())
    bad = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target == "#":
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if ROOT.resolve() not in dest.parents and dest != ROOT.resolve():
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor}")
    assert bad == []


def test_readme_opens_with_install_and_make() -> None:
    """Before any other section: `pip install freezewatch`, `make demo`, `make test`."""
    head = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    for line in ("pip install freezewatch", "make demo", "make test"):
        assert re.search(rf"^{re.escape(line)}\b", head, re.M), line
