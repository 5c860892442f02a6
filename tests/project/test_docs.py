"""The README is the way in: its two commands, a link to every page of docs/, and no link that leads nowhere.

The README stays short and the reference lives in docs/ (issue 27), so a page
the README does not link is a page nobody finds, and a heading renamed on one
page must not leave a dead anchor on another. Anchors are GitHub's: the
heading in lower case, punctuation dropped, spaces as hyphens.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# [text](target) and ![alt](target); a target with a scheme leaves the repository.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def links(page: Path) -> list[str]:
    """The repository-relative link targets of a Markdown page, code blocks left out."""
    text = CODE_BLOCK.sub("", page.read_text())
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z]+:", target)]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = CODE_BLOCK.sub("", page.read_text())
    return {anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def test_the_two_commands_are_make_run_and_make_test() -> None:
    # .ci/run calls `make test`: the README's test command and CI's must stay the same.
    readme = (REPO / "README.md").read_text()
    assert "```sh\nmake run\nmake test\n```" in readme
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), flags=re.MULTILINE)


def test_the_readme_links_every_docs_page() -> None:
    assert PAGES
    linked = {(REPO / target.split("#")[0]).resolve() for target in links(REPO / "README.md")}
    unlinked = [page.name for page in PAGES if page.resolve() not in linked]
    assert not unlinked, f"the README's 'Read on' does not link {unlinked}"


@pytest.mark.parametrize("page", [REPO / "README.md", *PAGES], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_leads_somewhere(page: Path) -> None:
    dead = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        anchored = destination.suffix == ".md" and bool(fragment)
        if not destination.exists() or (anchored and fragment not in anchors(destination)):
            dead.append(target)
    assert not dead, f"links in {page.name} that lead nowhere: {dead}"
