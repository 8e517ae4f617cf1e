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
