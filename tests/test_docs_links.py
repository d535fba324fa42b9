"""README.md and docs/*.md: every relative link, image and anchor resolves.

Docs are read on GitHub and in a clone; a link that points at a renamed page
or heading fails silently there, so it fails here. Links are taken from
markdown outside code (fenced blocks, indented blocks and inline code hold
commands, not links); anchors follow GitHub's heading slugs.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FIGURE_LIMIT = 300 * 1024  # figures live in the repository: keep them small

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SOURCE = re.compile(r"<(?:img|a)\b[^>]*\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines of a markdown page outside fenced and indented code blocks, inline code removed."""
    lines, fenced, previous_blank = [], False, True
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            lines.append("")
            continue
        in_indented_block = previous_blank and line.startswith("    ") and not line.lstrip().startswith(("*", "-", "|"))
        if fenced or in_indented_block:
            lines.append("")
            previous_blank = previous_blank and in_indented_block
            continue
        lines.append(re.sub(r"`[^`]*`", "", line))
        previous_blank = not line.strip()
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    text = text.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in enumerate(prose_lines(page.read_text(encoding="utf-8")), start=1):
        for pattern in (LINK, HTML_SOURCE):
            for match in pattern.finditer(line):
                target = match.group(1)
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
                    links.append((number, target))
    return links


def test_the_pages_exist_and_link_to_something():
    assert (REPO / "README.md").is_file()
    assert len(PAGES) > 1, "docs/*.md pages missing"
    assert any(relative_links(page) for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for number, target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{page.relative_to(REPO)}:{number}: {target}"
        if not destination.exists():
            broken.append(f"{where} (no such file)")
        elif REPO not in destination.parents and destination != REPO:
            broken.append(f"{where} (points outside the repository)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{where} (no heading with that anchor in {destination.relative_to(REPO)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_figure_is_used_and_small():
    figures = sorted((REPO / "docs" / "img").glob("*.png"))
    assert figures, "docs/img/ holds no figures (python benchmarks/make_figures.py)"
    linked = {(page.parent / target.partition("#")[0]).resolve() for page in PAGES for _, target in relative_links(page)}
    for figure in figures:
        assert figure.resolve() in linked, f"{figure.relative_to(REPO)} is not shown or linked in any page"
        assert figure.stat().st_size < FIGURE_LIMIT, f"{figure.relative_to(REPO)} is {figure.stat().st_size // 1024} KB"


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    # The comment above the test runs (the script's header mentions the command too).
    marker = max(i for i, line in enumerate(ci) if line.startswith("#") and "README's test command" in line)
    runs = [line.strip() for line in ci[marker + 1 :] if "-m pytest" in line and not line.lstrip().startswith("#")]
    assert runs, ".ci/run runs no pytest after its README marker"
    readme = [line.strip() for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()]
    for run in runs:
        command = re.sub(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+", "", run)  # environment settings CI adds
        assert command in readme, f"README.md does not show the command .ci/run runs: {command}"


def test_slugs_follow_github():
    assert github_slug("The data: `../shared` and what to use without it") == "the-data-shared-and-what-to-use-without-it"
    assert github_slug("`fbcnn bench`") == "fbcnn-bench"
    assert github_slug("GIMP 3 plug-in") == "gimp-3-plug-in"
