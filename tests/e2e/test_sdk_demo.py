"""The SDK demo (app/static/sdk-demo.html) in real headless Chromium: Centrifugo's own browser SDK
(app/static/vendor/, the npm build tests/sdk/js pins) on ``/connection/websocket``.

Two SDK pages on two instances chat through one room, and the ``/ws`` demo page in that room sees
every message and is seen by them: one channel, two protocols, a shared Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, expect

from tests.e2e.test_browser import browser, demo_url, instances, new_page, screenshot  # noqa: F401 - fixtures
from tests.sdk.sdk_support import JS, installed
from tests.support import ROOT, AppProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOM = "sdkdemo"


def sdk_url(app: AppProcess, name: str) -> str:
    return f"{app.http}/static/sdk-demo.html?name={name}&room={ROOM}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chat(
    browser: Browser,  # noqa: F811
    instances: tuple[AppProcess, AppProcess],  # noqa: F811
) -> AsyncIterator[tuple[Page, Page, Page]]:
    a, b = instances
    alice, sockets = await new_page(browser)
    bob, _ = await new_page(browser)
    carol, _ = await new_page(browser)
    await alice.goto(sdk_url(a, "alice"))
    await bob.goto(sdk_url(b, "bob"))
    await carol.goto(demo_url(a, b, name="carol", rooms=ROOM))
    for page in (alice, bob):
        await expect(page.locator("#status")).to_have_text("connected")
        await expect(page.locator("#log")).to_contain_text(f"you joined #{ROOM}")
    await expect(carol.locator("#status-text")).to_have_text("connected")
    assert sockets == [a.ws("/connection/websocket")]  # the SDK's own socket, token in its connect
    yield alice, bob, carol
    for page in (alice, bob, carol):
        await page.close()


async def say(page: Page, text: str) -> None:
    await page.fill("form.say input", text)
    await page.press("form.say input", "Enter")


def ws_log(page: Page) -> Locator:
    return page.locator(f'.log[data-room="{ROOM}"]')


async def test_two_sdk_pages_chat_and_the_ws_demo_sees_it(chat: tuple[Page, Page, Page]) -> None:
    alice, bob, carol = chat
    await say(alice, "hello from the SDK")
    for page in (alice, bob):
        await expect(page.locator("#log")).to_contain_text("alice: hello from the SDK")
    await expect(ws_log(carol)).to_contain_text("alice: hello from the SDK")
    await say(bob, "hi alice, from the other instance")
    await expect(alice.locator("#log")).to_contain_text("bob: hi alice, from the other instance")
    await expect(ws_log(carol)).to_contain_text("bob: hi alice, from the other instance")
    await screenshot(alice, "sdk-demo.png")


async def test_the_ws_demo_is_heard_by_the_sdk_pages_and_text_is_not_markup(chat: tuple[Page, Page, Page]) -> None:
    alice, bob, carol = chat
    await carol.fill("form.say input", "<b>from /ws</b>")
    await carol.press("form.say input", "Enter")
    for page in (alice, bob):
        await expect(page.locator("#log")).to_contain_text("carol: <b>from /ws</b>")
        assert await page.locator("#log b").count() == 0  # shown as text, never parsed
    # Each message once on each SDK page: one subscription, no echo doubled.
    assert await alice.locator("#log div", has_text="carol: <b>from /ws</b>").count() == 1


async def test_the_vendored_sdk_is_the_pinned_npm_build() -> None:
    installed()
    vendored = ROOT / "app" / "static" / "vendor" / "centrifuge-5.8.0.js"
    assert vendored.read_bytes() == (JS / "node_modules" / "centrifuge" / "dist" / "centrifuge.js").read_bytes()
    assert '"centrifuge": "5.8.0"' in (JS / "package.json").read_text()
