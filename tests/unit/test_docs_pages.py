"""Every fenced block of the README and docs/ is either run by a test or says why it cannot be.

A page's example that no test runs drifts from the product unnoticed; this keeps the list of
blocks that are not run explicit, short and reasoned.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.docs_examples import Block, blocks
from tests.support import ROOT

PAGES = ["README.md", *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md"))]
HOW = """Each fenced block in README.md and docs/*.md needs one of:
  - `<!-- example: NAME -->` on the line right before it, and a test under tests/ that runs it: it
    reads the block with `tests.docs_examples.example("PAGE", "NAME")` (console transcripts run with
    `tests.docs_console.Console`, Python scripts with `Console.check_python`, whose printed lines
    are compared with a ```text block marked `example: NAME-output`), so the test module names
    "PAGE" (e.g. "docs/auth.md") and "NAME" as string literals;
  - the language `text`, for output, diagrams and other things that are not commands;
  - `<!-- not-run: WHY -->` on the line right before it, for what cannot run here (Docker,
    Kubernetes, benchmarks of minutes), with the reason."""


def module_texts() -> list[str]:
    """The text of every test module: one that runs an example names its page and its name."""
    skip = {"docs_examples.py", "docs_console.py", "test_docs_pages.py"}
    return [path.read_text() for path in (ROOT / "tests").rglob("*.py") if path.name not in skip]


def problem(block: Block, tests: list[str]) -> str | None:
    where = f"{block.page}:{block.line}: a ```{block.language} block"
    if block.marker == "example" and block.label:
        if block.label.endswith("-output"):
            return None  # compared by the test of its example (test_an_output_block_follows_its_example)
        if any(f'"{block.page}"' in text and f'"{block.label}"' in text for text in tests):
            return None
        names = f'"{block.page}" and "{block.label}"'
        return f"{where} is marked `example: {block.label}`, but no test module names both {names}"
    if block.marker == "not-run" or block.language == "text":
        return None
    return f"{where} is neither a run example, `text`, nor `not-run`"


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_run_or_says_why_not(page: str) -> None:
    tests = module_texts()
    problems = [found for block in blocks(page) if (found := problem(block, tests))]
    assert not problems, "\n".join(problems) + "\n\n" + HOW


def test_an_output_block_follows_its_example() -> None:
    for page in PAGES:
        names = [b.label for b in blocks(page) if b.marker == "example" and b.label]
        for name in names:
            if name.endswith("-output"):
                assert name.removesuffix("-output") in names, (
                    f"{page}: {name} has no example {name.removesuffix('-output')}"
                )


def test_the_not_run_list_stays_short() -> None:
    not_run = [f"{b.page}:{b.line}" for page in PAGES for b in blocks(page) if b.marker == "not-run"]
    assert len(not_run) <= 12, f"{len(not_run)} blocks are not run; run some (see HOW in this file): {not_run}"


def test_make_run_is_what_the_console_examples_start() -> None:
    """tests/docs_console.py starts a page's `make run` as dev-mode `python -m app`: keep it so."""
    recipe = subprocess.run(["make", "-n", "-s", "run"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert re.search(r"^SWITCHBOARD_DEV_MODE=true \S+/python -m app --host \S+ --port \S+$", recipe, re.M), recipe
