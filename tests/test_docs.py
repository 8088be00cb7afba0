"""The README reads on its own: what it links to is in the repository, and it cites nothing outside it."""

from __future__ import annotations

import re

from tests.command import ROOT


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).exists(), (page.name, target)


def test_the_readme_links_the_pages_that_hold_the_long_parts() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in ("docs/performance.md", "docs/security.md", "docs/jobs.md", "docs/providers.md"):
        assert f"]({page})" in readme, page
