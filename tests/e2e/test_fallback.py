"""The demo when WebSockets do not get through: switchboard.js reads over SSE, sends over HTTP.

The test blocks WebSockets in Chromium itself (``route_web_socket``: every ``/ws`` the page opens
is closed before it can say anything), for a page from its start or mid-session; the instance
and redis-server are real, as in test_browser.py, whose fixtures these are.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from tests.e2e.test_browser import TIMEOUT, browser, instances, room_button, say, screenshot
from tests.support import AppProcess

__all__ = ["browser", "instances"]  # the fixtures, shared with test_browser.py
pytestmark = pytest.mark.asyncio(loop_scope="module")
WS = re.compile(r"/ws$")


async def refuse(route: WebSocketRoute) -> None:
    await route.close(code=1011, reason="blocked by the test")


def url(app: AppProcess, name: str, rooms: str = "fallback") -> str:
    return f"{app.http}/?name={name}&rooms={rooms}&servers=ws://127.0.0.1:{app.port}"


async def opened(browser: Browser, address: str, *, blocked: bool) -> tuple[Page, list[str]]:
    context = await browser.new_context(viewport={"width": 900, "height": 640})
    if blocked:
        await context.route_web_socket(WS, refuse)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    problems: list[str] = []
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    await page.goto(address)
    await expect(page.locator("#status-text")).to_have_text("connected")
    return page, problems


@pytest_asyncio.fixture(loop_scope="module")
async def closing() -> AsyncIterator[list[Page]]:
    pages: list[Page] = []
    yield pages
    for page in pages:
        await page.context.close()


async def test_with_websockets_blocked_two_pages_chat_over_sse_and_show_it(
    browser: Browser, instances: tuple[AppProcess, AppProcess], closing: list[Page]
) -> None:
    a, _ = instances
    alice, problems = await opened(browser, url(a, "alice"), blocked=True)
    bob, _ = await opened(browser, url(a, "bob"), blocked=True)
    closing += [alice, bob]
    for page in (alice, bob):
        await expect(page.locator("#transport")).to_have_text("SSE")
        assert await page.evaluate("switchboard.transport") == "sse"
    # Publish, presence and history go over POST /command; the pushes come over /sse.
    await say(alice, "hello over sse", bob, "alice: hello over sse", room="fallback")
    await say(bob, "hi alice", alice, "bob: hi alice", room="fallback")
    await expect(room_button(alice, "fallback")).to_contain_text("2 online")
    members = alice.locator("#members li")
    await expect(members).to_have_count(2)
    # A room added later reopens the stream with both channels, each from its own position.
    await bob.fill("form.add input", "fallback2")
    await bob.press("form.add input", "Enter")
    await alice.fill("form.add input", "fallback2")
    await alice.press("form.add input", "Enter")
    await say(bob, "in the second room", alice, "bob: in the second room", room="fallback2")
    await room_button(bob, "fallback").click()
    await say(bob, "and the first", alice, "bob: and the first", room="fallback")
    streams = await alice.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
    assert any("/sse?" in name for name in streams), streams
    assert any(name.endswith("/command") for name in streams), streams
    await screenshot(alice, "demo-sse.png")
    assert problems == []


async def test_a_websocket_that_dies_mid_session_resumes_over_sse_losing_and_repeating_nothing(
    browser: Browser, instances: tuple[AppProcess, AppProcess], closing: list[Page]
) -> None:
    a, _ = instances
    alice, _ = await opened(browser, url(a, "alice", "switch"), blocked=False)
    bob, _ = await opened(browser, url(a, "bob", "switch"), blocked=False)
    closing += [alice, bob]
    await expect(alice.locator("#transport")).to_have_text("WebSocket")
    await say(bob, "before the switch", alice, "bob: before the switch", room="switch")
    # From now on this page's WebSockets are refused; its stream waits until Bob has written.
    await alice.context.route_web_socket(WS, refuse)
    await alice.evaluate(
        """() => {
          window.transports = [];
          switchboard.addEventListener("transport", (e) => transports.push(e.detail.transport));
          const streamUrl = switchboard.streamUrl.bind(switchboard);
          window.gate = {};
          window.gate.open = new Promise((resolve) => { window.gate.release = resolve; });
          switchboard.streamUrl = async () => { await window.gate.open; return streamUrl(); };
          switchboard.socket.close(4001, "test: the socket dies");
        }"""
    )
    await alice.wait_for_function("transports.includes('sse')")
    gap = [f"while switching {n}" for n in range(3)]
    for text in gap:
        await say(bob, text, bob, f"bob: {text}", room="switch")
    await alice.evaluate("window.gate.release()")
    await expect(alice.locator("#transport")).to_have_text("SSE")
    log = alice.locator('.log[data-room="switch"]')
    # Bob's three and the room's notice that Alice's socket left: what the stream replayed.
    await expect(log).to_contain_text("caught up: 4 message(s)")
    await expect(log).to_contain_text("alice left")
    await say(bob, "live again", alice, "bob: live again", room="switch")
    await say(alice, "sent over http", bob, "alice: sent over http", room="switch")
    said = [re.sub(r"^\d\d:\d\d\s*", "", text) for text in await log.locator(".msg").all_inner_texts()]
    bobs = ["bob: " + text for text in ["before the switch", *gap, "live again"]]
    assert said == [*bobs, "alice: sent over http"]  # each once, in order, across the switch
    assert await alice.evaluate("transports") == ["sse"]


async def test_a_stream_refused_for_its_token_is_shown_and_not_retried(
    browser: Browser, instances: tuple[AppProcess, AppProcess], closing: list[Page]
) -> None:
    a, _ = instances
    context = await browser.new_context()
    await context.route_web_socket(WS, refuse)
    page = await context.new_page()
    closing.append(page)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/sse?" in r.url else None)
    await page.goto(url(a, "eve") + "&token=not-a-valid-token")
    refused = "refused this connection (1008: 101: token required or bad"
    await expect(page.locator(".err").first).to_contain_text(refused)
    await expect(page.locator("#status-text")).to_have_text("refused")
    state = await page.evaluate("({state: switchboard.state, transport: switchboard.transport})")
    assert state == {"state": "closed", "transport": "sse"}
    # The stream, and the one request that read its refusal: no retry after that.
    assert len(streams) == 2, streams
