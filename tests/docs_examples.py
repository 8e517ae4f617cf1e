"""Code examples read straight out of the README and docs/, so that tests run what the page shows.

A page marks an example with an HTML comment on the line right before its fenced block::

    <!-- example: ws-publish -->
    ```python
    ...
    ```

``example("docs/client.md", "ws-publish")`` returns the block's text. A test runs it against the
configuration the page claims, so a page and its test cannot drift apart: edit the page, and the
test runs the edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.support import ROOT

_MARK = re.compile(r"^<!-- example: ([\w.-]+) -->\n(`{3,}|~{3,})([\w+-]*)[^\n]*\n(.*?)^\2[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Example:
    page: str
    name: str
    language: str
    code: str


def examples(page: str) -> dict[str, Example]:
    """Every marked example of ``page`` (a path relative to the repository root), by name."""
    text = (ROOT / page).read_text()
    found: dict[str, Example] = {}
    for match in _MARK.finditer(text):
        name = match.group(1)
        assert name not in found, f"{page}: example {name!r} is marked twice"
        found[name] = Example(page, name, match.group(3), match.group(4))
    return found


def example(page: str, name: str) -> str:
    """The code of the example ``name`` on ``page``; fails the test when the page lost it."""
    found = examples(page)
    assert name in found, f"{page} has no example marked {name!r} (have: {sorted(found)})"
    return found[name].code


_FENCE = re.compile(r"^(`{3,}|~{3,})([\w+-]*)")
_MARKER = re.compile(r"^<!-- (example|not-run): (.+?) -->$")


@dataclass(frozen=True)
class Block:
    """A fenced block of a page, with the marker on the line before it (if any)."""

    page: str
    line: int
    language: str
    marker: str | None  # "example" or "not-run"
    label: str | None  # the example's name, or why it is not run


def blocks(page: str) -> list[Block]:
    """Every fenced block of ``page``, in order."""
    lines = (ROOT / page).read_text().splitlines()
    found: list[Block] = []
    fence: str | None = None
    for number, line in enumerate(lines, 1):
        if fence is not None:
            if line.strip() == fence:
                fence = None
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            marked = _MARKER.match(lines[number - 2]) if number > 1 else None
            found.append(
                Block(
                    page,
                    number,
                    opening.group(2),
                    marked.group(1) if marked else None,
                    marked.group(2) if marked else None,
                )
            )
    return found
