"""bench/sections.py: a benchmark rewrites its own section of a page and nothing else."""

from __future__ import annotations

from pathlib import Path

from bench.sections import replace_section

START, END = "<!-- x:start -->", "<!-- x:end -->"


def test_the_section_between_the_markers_is_replaced_and_the_prose_kept(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\nbefore\n\n{START}\nold\n{END}\n\nafter\n<!-- y:start -->\nother\n<!-- y:end -->\n")
    replace_section(page, START, END, [START, "new", "rows", END])
    assert page.read_text() == (
        f"# Page\n\nbefore\n\n{START}\nnew\nrows\n{END}\n\nafter\n<!-- y:start -->\nother\n<!-- y:end -->\n"
    )


def test_a_page_without_the_markers_gets_the_section_at_its_end(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nprose\n\n")
    replace_section(page, START, END, [START, "rows", END], heading="Results")
    assert page.read_text() == f"# Page\n\nprose\n\n## Results\n\n{START}\nrows\n{END}\n"
    replace_section(page, START, END, [START, "again", END], heading="Results")
    assert page.read_text() == f"# Page\n\nprose\n\n## Results\n\n{START}\nagain\n{END}\n"


def test_a_page_that_does_not_exist_is_made(tmp_path: Path) -> None:
    page = tmp_path / "new.md"
    replace_section(page, START, END, [START, "rows", END])
    assert page.read_text() == f"\n{START}\nrows\n{END}\n"
