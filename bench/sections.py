"""Where each benchmark writes its results: between its own pair of markers in a docs page.

Every ``make bench-*`` job rewrites only its own section, so the prose around it (what the
numbers say, what was tried) stays as written, and two jobs never overwrite each other.
"""

from __future__ import annotations

from pathlib import Path


def replace_section(page: Path, start: str, end: str, lines: list[str], heading: str | None = None) -> None:
    """Put ``lines`` (the first is ``start``, the last ``end``) in place of the page's section
    between those markers. A page without them gets the section at its end, under ``## heading``
    when one is given; a page that does not exist yet is made."""
    text = page.read_text() if page.exists() else ""
    if start not in text:
        title = f"\n\n## {heading}\n\n" if heading else "\n"
        text = text.rstrip() + title + start + end + "\n"
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    page.write_text(before + "\n".join(lines) + after)
