"""README and docs stand alone: no pointer outside the repository, every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"\.\./|METHOD\.md|ENVIRONMENT\.md|DESIGN\.md|/work/")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_stays_inside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert OUTSIDE.findall(text) == []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{page.name}: broken link {target}"


def test_method_page_is_linked_from_the_readme() -> None:
    assert "(docs/method.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_cli_reference_is_the_commands_own() -> None:
    """docs/cli.md's command reference is what the commands define (names, defaults, help):
    an option added, renamed or given another default fails here until the doc is regenerated
    with `python -m hybridize_cli.reference`."""
    from hybridize_cli.main import app
    from hybridize_cli.reference import BEGIN, END, reference

    text = (ROOT / "docs" / "cli.md").read_text()
    documented = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert documented == reference(app)
