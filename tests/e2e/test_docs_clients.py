"""docs/client.md's browser examples, run as written in Debian's Chromium (through Playwright).

Each snippet is loaded as a module script into a page of the instance the page's own ``make run``
line starts; what it logs to the console is compared with the output block under it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.docs_console import Console, Step
from tests.docs_examples import example
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS

PAGE = "docs/client.md"


async def run_in_chromium(url: str, code: str, lines: int) -> list[str]:
    """Load ``code`` as a module into a page of ``url``; the first ``lines`` it logs (10 s at most)."""
    logged: list[str] = []
    errors: list[str] = []
    enough = asyncio.Event()

    def log(text: str) -> None:
        logged.append(text)
        if len(logged) >= lines:
            enough.set()

    def fail(error: object) -> None:
        errors.append(str(error))
        enough.set()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.on("console", lambda message: log(message.text))
            page.on("pageerror", fail)
            await page.goto(url)
            logged.clear()  # only what the example logs
            await page.add_script_tag(type="module", content=code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), 10)
            await asyncio.sleep(0.3)  # a grace for lines beyond the page's: they show up as a mismatch
        finally:
            await browser.close()
    assert not errors, errors
    return logged


@pytest.mark.parametrize("name", ["switchboard-js", "switchboardclient-js"])
def test_browser_clients_run_as_written(tmp_path: Path, name: str) -> None:
    output = example(PAGE, f"{name}-output").splitlines()
    with Console(tmp_path) as console:
        console.run(example(PAGE, "start"))
        url = f"http://127.0.0.1:{console.port}/api/instance"
        logged = asyncio.run(run_in_chromium(url, example(PAGE, name), len(output)))
        console.compare(Step(f"{PAGE}: {name} in Chromium"), output, logged)
