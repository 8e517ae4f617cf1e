"""The one-way streams' examples in docs/protocol.md and docs/client.md, run as the pages show them."""

from __future__ import annotations

from pathlib import Path

from tests.docs_console import Console
from tests.docs_examples import example


def test_stream_examples_run_as_written(tmp_path: Path) -> None:
    with Console(tmp_path) as console:
        for name in ("sse-start", "sse", "ndjson"):
            console.run(example("docs/protocol.md", name))


def test_client_stream_reader_runs_as_written(tmp_path: Path) -> None:
    page = "docs/client.md"
    with Console(tmp_path) as console:
        console.run(example(page, "streams-start"))
        console.check_python(example(page, "sse-python"), example(page, "sse-python-output"))
