"""Reading the project's Markdown docs in tests: sections, table columns and fenced JSON examples.

The contract tests take their expectations from ``docs/contracts.md`` (what users read), so that the docs and the
code cannot drift apart without a failing test.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONTRACTS = DOCS / "contracts.md"
CONFIGURATION = DOCS / "configuration.md"

_HEADING = re.compile(r"^(#{1,6}) +(.+?) *$")
_FENCE = re.compile(r"^```")


def read(path: Path) -> str:
    """The file's text; a clear failure (not a skip) when it is missing."""
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return path.read_text(encoding="utf-8")


def section(path: Path, heading: str) -> str:
    """The text under the heading titled ``heading`` (any level), up to the next heading of the same or a higher
    level. Headings inside fenced code blocks do not count."""
    lines = read(path).splitlines()
    start = level = None
    in_code = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        m = None if in_code else _HEADING.match(line)
        if m is None:
            continue
        if start is None and m.group(2) == heading:
            start, level = i + 1, len(m.group(1))
        elif start is not None and len(m.group(1)) <= level:
            return "\n".join(lines[start:i])
    assert start is not None, f"{path.relative_to(ROOT)} has no heading {heading!r}"
    return "\n".join(lines[start:])


def json_block(path: Path, heading: str) -> str:
    """The first fenced ```json block in the section ``heading`` of ``path``."""
    m = re.search(r"^```json\n(.*?)^```", section(path, heading), re.S | re.M)
    assert m is not None, f"{path.relative_to(ROOT)}: no ```json block under {heading!r}"
    return m.group(1).strip()


def tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables in ``text``, each as its body rows (header and rule rows left out), each row its cells."""
    rule = re.compile(r"^\|[-| :]+\|$")
    found: list[list[list[str]]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or rule.match(line):
            continue
        if i + 1 < len(lines) and rule.match(lines[i + 1]):
            found.append([])  # a header row starts a table
            continue
        if found:
            found[-1].append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return found


def first_column(text: str) -> list[str]:
    """The first cell of every body row of every table in ``text``."""
    return [row[0] for table in tables(text) for row in table]


def code_spans(cell: str) -> list[str]:
    """The `code` spans of a table cell."""
    return re.findall(r"`([^`]+)`", cell)
