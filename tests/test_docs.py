"""The README and docs/ as users get them: a short README, links that resolve, nothing that points outside the
repository, and no story of how the work was done (history lives in CHANGELOG.md)."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

from tests.docs import DOCS, ROOT

README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
README_MAX_LINES = 250

# Text that no file a user gets may contain: a clone has no ../shared.
OUTSIDE = ("../shared",)
# Folders (and files) whose text files must not point outside the repository.
CHECKED = ("README.md", "CHANGELOG.md", "docs", "agent", "export", "train", "deploy")
# Phrases that tell how the work was done rather than what the project is.
STORY = ("issue #", "this session", "the seed", "was lent", "design.md")


def markdown_files() -> list[Path]:
    return [README, CHANGELOG, *sorted(DOCS.glob("*.md"))]


def repository_files(*roots: str) -> list[Path]:
    """Files under ``roots`` that the repository has or will have: tracked, or new and not ignored by git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *roots],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file under the roots
        listed = [str(p.relative_to(ROOT)) for r in roots for p in [ROOT / r, *(ROOT / r).rglob("*")] if p.is_file()]
    return [ROOT / name for name in sorted(set(listed)) if (ROOT / name).is_file()]


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def without_code_blocks(markdown: str) -> str:
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def without_code(markdown: str) -> str:
    """Markdown without fenced code blocks and inline code spans (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(markdown))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in without_code_blocks(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6} +(.+?) *$", line)
        if m:
            base = anchor = slug(m.group(1))
            n = 0
            while anchor in found:  # GitHub numbers repeated headings
                n += 1
                anchor = f"{base}-{n}"
            found.add(anchor)
    return found


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, at most {README_MAX_LINES}: reference is in docs/"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked} missing")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            problems.append(f"{target}: no heading #{fragment} in {linked.relative_to(ROOT)}")
    assert not problems, f"{path.relative_to(ROOT)}: broken links:\n  " + "\n  ".join(problems)


def test_nothing_points_outside_the_repository():
    found = []
    for path in repository_files(*CHECKED):
        text = text_of(path) or ""
        for n, line in enumerate(text.splitlines(), 1):
            if any(needle in line for needle in OUTSIDE):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "references to files outside the repository:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_describe_the_project_not_its_making(path):
    found = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for phrase in STORY:
            if phrase in line.lower():
                found.append(f"{n}: {phrase!r} in {line.strip()}")
    assert not found, f"{path.relative_to(ROOT)}: development story (history goes to CHANGELOG.md):\n  " + "\n  ".join(
        found
    )
