"""The README and docs/: every link resolves, the README stays short and says the essentials on its
first screen, and no page speaks in the project's internal wording."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docker" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # not inside code blocks
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_the_link_check_sees_links() -> None:
    assert "docs/study.md" in links(ROOT / "README.md")
    assert anchors(ROOT / "README.md") >= {"two-commands", "connecting-a-project"}


def test_every_doc_page_is_reachable_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md") if not t.startswith("http")}
    pages = {p.resolve() for p in (ROOT / "docs").glob("*.md")}
    assert not pages - linked - {(ROOT / "docs" / "hostile_inputs.md").resolve()}, "a docs page the README does not link"


def test_the_readme_is_short_and_its_first_screen_says_what_matters() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    first = "\n".join(lines[:60])
    assert "make demo" in first and "make test" in first
    assert "pre-annotates" in first and "which images your annotators should label next" in first
    assert "Label savings" in "\n".join(lines[:70]) and "Speed" in "\n".join(lines[:70]) and "Reliability" in "\n".join(lines[:70])


@pytest.mark.parametrize("claim", ["only if better", "only if it is better", "only if it is not worse"])
def test_the_readme_states_the_promotion_rule_as_it_is(claim: str) -> None:
    """Not "only if better": a model trained on more labels is served unless the evidence says it is
    worse, judged differently below and above PROMOTION_MIN_HELDOUT (ml_backend/training/promotion.py)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    assert claim not in text
    assert "PROMOTION_MIN_HELDOUT" in text and "PROMOTION_MARGIN" in text


INTERNAL = [
    (re.compile(r"\bissues? ?#?\d+|\bthis issue\b|\bbefore this issue\b", re.I), "issue numbers or 'this issue'"),
    (re.compile(r"\bwas lent\b|\bnot lent\b|\bno GPU was lent\b|\bno accelerator was lent\b", re.I), "which machine a session was lent"),
    (re.compile(r"\bcommit [0-9a-f]{7,40}\b"), "commit hashes"),
    (re.compile(r"\breview fixes\b", re.I), "the review that produced a change"),
]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_internal_wording(page: Path) -> None:
    text = page.read_text()
    found = [(why, m.group(0)) for rx, why in INTERNAL for m in rx.finditer(text)]
    assert not found, f"{page.relative_to(ROOT)}: {found}"
