"""The demo and the browser client in real headless Chromium (Debian's, driven by Playwright).

Two instances share a redis-server; each page loads from one instance and can fail over to the
other (``?servers=``). Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.support import API_HEADERS, ROOT, TEST_API_KEY, AppProcess, RedisServer, running

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT = 10_000  # ms, for every wait on the page
expect.set_options(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppProcess, AppProcess]]:
    tmp = tmp_path_factory.mktemp("browser")
    redis_server = RedisServer(tmp / "redis").start()
    a, b = AppProcess("a", tmp), AppProcess("b", tmp)
    origins = f"http://127.0.0.1:{a.port},http://127.0.0.1:{b.port}"
    for app in (a, b):
        app.env.update(
            {
                "SWITCHBOARD_BROKER_URL": redis_server.url,
                "SWITCHBOARD_DEV_MODE": "true",
                "SWITCHBOARD_ALLOWED_ORIGINS": origins,
                "SWITCHBOARD_REFRESH_GRACE": "1",
            }
        )
    try:
        with running(a, b):
            yield a, b
    finally:
        redis_server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


def demo_url(home: AppProcess, other: AppProcess, **query: str) -> str:
    servers = f"ws://127.0.0.1:{home.port},ws://127.0.0.1:{other.port}"
    params = "&".join(f"{k}={v}" for k, v in {**query, "servers": servers}.items())
    return f"{home.http}/?{params}"


async def say(page: Page, text: str, other: Page, shown: str, room: str = "demo") -> None:
    """Send ``text`` from one demo page's current room; wait until the other page's log of ``room`` shows ``shown``."""
    await page.fill("form.say input", text)
    await page.press("form.say input", "Enter")
    await expect(other.locator(f'.log[data-room="{room}"]')).to_contain_text(shown)


async def screenshot(page: Page, name: str) -> None:
    path = ARTIFACTS / name
    await page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000, f"{name} looks empty"


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 900, "height": 640})
    page.set_default_timeout(TIMEOUT)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    return page, sockets


def room_button(page: Page, room: str) -> Any:
    return page.locator(f'#rooms button[data-room="{room}"]')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pages(
    browser: Browser, instances: tuple[AppProcess, AppProcess]
) -> AsyncIterator[tuple[Page, Page, list[str]]]:
    a, b = instances
    alice, sockets = await new_page(browser)
    bob, _ = await new_page(browser)
    await alice.goto(demo_url(a, b, name="alice", rooms="demo,second"))
    await expect(alice.locator("#status-text")).to_have_text("connected")
    yield alice, bob, sockets
    await alice.close()
    await bob.close()


async def test_two_pages_on_two_instances_share_several_rooms_on_one_socket(
    pages: tuple[Page, Page, list[str]], instances: tuple[AppProcess, AppProcess]
) -> None:
    alice, bob, sockets = pages
    a, b = instances
    await expect(alice.locator("#instance")).to_have_text("instance a")
    await bob.goto(demo_url(b, a, name="bob", rooms="demo"))
    await expect(bob.locator("#status-text")).to_have_text("connected")
    await expect(bob.locator("#instance")).to_have_text("instance b")
    # Each sees the other: Alice gets Bob's join; both show the cluster-wide count from presence_stats.
    await expect(alice.locator('.log[data-room="demo"]')).to_contain_text("bob joined")
    await expect(room_button(alice, "demo")).to_contain_text("2 online")
    await expect(bob.locator("#online")).to_have_text("2")
    await say(alice, "hello from instance a", bob, "alice: hello from instance a")
    await say(bob, "hi alice, this is b", alice, "bob: hi alice, this is b")
    # A second room on the same socket: Bob adds it, Alice is already there.
    await bob.fill("form.add input", "second")
    await bob.press("form.add input", "Enter")
    await expect(room_button(alice, "second")).to_contain_text("2 online")
    await say(bob, "over in second", alice, "bob: over in second", room="second")
    # Alice is looking at demo: second counts what she has not seen (Bob joining, his message).
    await expect(room_button(alice, "second").locator(".unread")).to_have_text("2")
    await room_button(alice, "second").click()
    await expect(alice.locator("#room-title")).to_have_text("#second")
    await say(alice, "seen it", bob, "alice: seen it", room="second")
    # One socket for every room, and the token travelled in `connect`, not in the URL.
    assert len(sockets) == 1
    assert "token" not in sockets[0]
    assert sockets[0].endswith("/ws")
    await screenshot(alice, "demo-alice.png")
    await screenshot(bob, "demo-bob.png")


async def joined_page(
    browser: Browser, home: AppProcess, other: AppProcess, name: str, width: int = 900, height: int = 640
) -> tuple[Page, list[str]]:
    """A demo page that joined ``demo``, and the HTTP errors and console errors it has had."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT)
    problems: list[str] = []
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    await page.goto(demo_url(home, other, name=name, rooms="demo"))
    await expect(page.locator("#status-text")).to_have_text("connected")
    return page, problems


async def test_a_late_joiner_sees_recent_messages_the_members_and_when_each_was_said(
    browser: Browser, pages: tuple[Page, Page, list[str]], instances: tuple[AppProcess, AppProcess]
) -> None:
    a, b = instances
    carol, problems = await joined_page(browser, b, a, "carol")
    log = carol.locator('.log[data-room="demo"]')
    # The room's history, up to the moment she joined, then the line that says she is in.
    await expect(log.locator(".recent")).to_contain_text("alice: hello from instance a")
    await expect(log.locator(".recent")).to_contain_text("bob: hi alice, this is b")
    await expect(log.locator(".you")).to_have_text(re.compile(r"^\d\d:\d\d\s*you joined #demo$"))
    order = await log.evaluate("(el) => [...el.children].map((c) => c.className)")
    assert order[:2] == ["recent", "you"], order
    # Every message says when it was said: the sender's time, which travels with the message.
    times = await log.locator(".msg time").all_inner_texts()
    assert times, "no timestamps"
    assert all(re.fullmatch(r"\d\d:\d\d", t) for t in times), times
    # The member list comes from `presence`, cluster-wide: the two on instance a, and her.
    members = carol.locator("#members li")
    await expect(members).to_have_count(3)
    assert sorted(await members.all_inner_texts()) == ["alice", "bob", "carol (you)"]
    await expect(carol.locator("#members li.me")).to_have_text("carol (you)")
    # Her message shows with its time on the others' pages too.
    alice = pages[0]
    await say(carol, "hello, I am late", alice, "carol: hello, I am late")
    assert re.fullmatch(r"\d\d:\d\d", await alice.locator('.log[data-room="demo"] .msg time').last.inner_text())
    await screenshot(carol, "demo-desktop.png")
    assert problems == []
    await carol.close()


async def test_the_demo_fits_a_phone_and_folds_its_sidebar(
    browser: Browser, instances: tuple[AppProcess, AppProcess]
) -> None:
    a, b = instances
    phone, problems = await joined_page(browser, b, a, "dana", width=390, height=844)
    # Nothing is cut off: no sideways scrolling, and the input and its button are on screen.
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    for selector in ("form.say input", "form.say button", "#room-title", "#toggle"):
        box = await phone.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0, (selector, box)
        assert box["x"] + box["width"] <= 390, (selector, box)
    # The sidebar is folded away until asked for, and folds again once a room is picked.
    await expect(phone.locator("#rooms")).to_be_hidden()
    await phone.click("#toggle")
    await expect(phone.locator("#rooms")).to_be_visible()
    await expect(phone.locator("#members li.me")).to_have_text("dana (you)")
    await room_button(phone, "demo").click()
    await expect(phone.locator("#rooms")).to_be_hidden()
    await expect(phone.locator('.log[data-room="demo"] .recent')).to_contain_text("alice: hello from instance a")
    await expect(phone.locator('.log[data-room="demo"] .you')).to_contain_text("you joined #demo")
    await say(phone, "typed on a phone", phone, "dana: typed on a phone")
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(phone, "demo-phone.png")
    # The favicon is served: no 404 (or any other error) in the console.
    assert problems == []
    await phone.close()


async def test_killed_instance_page_reconnects_elsewhere_and_each_room_catches_up(
    pages: tuple[Page, Page, list[str]], instances: tuple[AppProcess, AppProcess]
) -> None:
    alice, bob, _ = pages
    a, b = instances
    # Alice has been given everything published so far (the earlier tests' pages leaving, too):
    # what she catches up on is then exactly what is published while she is away.
    for room in ("demo", "second"):
        body = {"channel": f"room:{room}", "limit": 1}
        async with httpx.AsyncClient(timeout=10) as http:
            head = (await http.post(f"{b.http}/api/v1/history", json=body, headers=API_HEADERS)).json()
        await alice.wait_for_function(
            "([channel, offset]) => (switchboard.subscriptions.get(channel).position?.offset || 0) >= offset",
            arg=[f"room:{room}", head["offset"]],
        )
    # Hold Alice's reconnect until Bob has written in both rooms, so each has something to catch up.
    await alice.evaluate(
        """() => {
          window.states = [];
          switchboard.addEventListener("state", (e) => states.push(e.detail.state));
          const url = switchboard.options.url;
          window.gate = {};
          window.gate.open = new Promise((resolve) => { window.gate.release = resolve; });
          switchboard.options.url = async () => { await window.gate.open; return url(); };
        }"""
    )
    a.kill()
    await alice.wait_for_function("states.includes('reconnecting')")
    await room_button(bob, "demo").click()
    await say(bob, "while you were away (demo)", bob, "bob: while you were away (demo)")
    await room_button(bob, "second").click()
    await say(bob, "while you were away (second)", bob, "bob: while you were away (second)", room="second")
    await alice.evaluate("window.gate.release()")
    await expect(alice.locator("#instance")).to_have_text("instance b")
    await expect(alice.locator("#status-text")).to_have_text("connected")
    assert await alice.evaluate("states") == ["reconnecting", "open"]
    for room in ("demo", "second"):
        log = alice.locator(f'.log[data-room="{room}"]')
        await expect(log).to_contain_text(f"bob: while you were away ({room})")
        await expect(log).to_contain_text("caught up: 1 message(s)")
    await screenshot(alice, "demo-failover.png")
    await say(bob, "are you back?", alice, "bob: are you back?", room="second")
    await say(alice, "back, on instance b", bob, "alice: back, on instance b", room="second")


async def test_invalid_token_is_shown_and_not_retried(
    browser: Browser, instances: tuple[AppProcess, AppProcess]
) -> None:
    _, b = instances
    page, sockets = await new_page(browser)
    await page.goto(f"{b.http}/?name=eve&rooms=demo&token=not-a-valid-token")
    await expect(page.locator(".err").first).to_contain_text("refused this connection (1008")
    await expect(page.locator("#status-text")).to_have_text("refused")
    # Terminal: the client is closed, with no retry scheduled, after exactly one attempt.
    state = await page.evaluate("({state: switchboard.state, connections: switchboard.connections})")
    assert state == {"state": "closed", "connections": 1}
    assert len(sockets) == 1
    await screenshot(page, "demo-refused.png")
    await page.close()


CLIENT_UNIT_CHECKS = """async () => {
  const m = await import("/static/switchboard.js");
  const out = {};
  // Full jitter: always within [0, min(cap, base * 2^attempt)), and the cap holds.
  const bounds = [];
  for (let attempt = 0; attempt < 12; attempt++) {
    bounds.push([m.backoffDelay(attempt, 100, 5000, () => 0), m.backoffDelay(attempt, 100, 5000, () => 0.999999)]);
  }
  out.bounds = bounds;
  const samples = Array.from({length: 2000}, () => m.backoffDelay(3, 100, 5000));
  out.sampleMin = Math.min(...samples);
  out.sampleMax = Math.max(...samples);
  out.sampleMean = samples.reduce((a, b) => a + b, 0) / samples.length;
  // The queue bound: the oldest items are dropped.
  const q = new m.BoundedQueue(3);
  out.dropped = [1, 2, 3, 4, 5].map((n) => q.push(n)).filter((x) => x !== undefined);
  out.drained = q.drain();
  out.sizeAfter = q.size;
  // A disconnected client queues at most queueLimit messages and reports what it drops.
  const client = new m.SwitchboardClient({url: "ws://127.0.0.1:9/never", queueLimit: 2});
  const dropped = [];
  client.addEventListener("dropped", (e) => dropped.push(e.detail.message));
  ["a", "b", "c", "d"].forEach((x) => client.send({x}));
  out.clientQueue = client.queue.items;
  out.clientDropped = dropped;
  out.terminal = m.TERMINAL_CODES;
  out.stops = [1003, 1008, 4003, 4004, 4010, 4999, 1006, 1011, 1012, 4000, 4001, 4002].map(m.isTerminal);
  return out;
}"""


RESUME_CHECK = """async ({wsUrl, channel, firstMessage, apiKey}) => {
  const m = await import("/static/switchboard.js");
  const until = async (check) => {
    for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
    if (!check()) throw new Error("timed out: " + check);
  };
  const {token} = await (await fetch("/dev/token", {method: "POST"})).json();
  const publish = (content) => fetch(`/api/global/${channel}`, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-API-Key": apiKey},
    body: JSON.stringify({content}),
  });
  let gate = null;  // while set, a reconnect waits: the test publishes in the gap
  const urls = [];
  const sent = [];
  const client = new m.SwitchboardClient({
    baseDelay: 10,
    url: async () => {
      if (gate) await gate.promise;
      return `${wsUrl}/ws/global/${channel}` + (firstMessage ? "?auth=first" : "");
    },
    getToken: firstMessage ? () => token : undefined,
  });
  const contents = [];
  const recovered = [];
  client.addEventListener("message", (e) => { if (e.detail.content !== undefined) contents.push(e.detail.content); });
  client.addEventListener("recovered", (e) => recovered.push(e.detail));
  client.addEventListener("open", () => urls.push(client.socket.url));
  client.addEventListener("message", (e) => { if (e.detail.type === "auth_success") sent.push(e.detail.user); });
  client.connect();
  await until(() => client.ready);
  if (!firstMessage) {
    // ?since= has no reply after the join: `open` is the socket's, and a publish from elsewhere
    // can beat the join. Its presence entry, registered once it is in, says it is. (In the
    // first-message flow auth_success itself comes once the client is in the channel.)
    const presence = () => fetch(`/api/presence/global:${channel}`, {headers: {"X-API-Key": apiKey}});
    const present = async () => (await (await presence()).json()).members;
    for (let i = 0; i < 250 && !((await present()) >= 1); i++) await new Promise((r) => setTimeout(r, 20));
  }
  await publish(1);
  await until(() => contents.length === 1);
  let release;
  gate = {promise: new Promise((r) => { release = r; })};
  client.socket.close(4001, "test: network blip");  // 4001: a code the client retries
  await until(() => client.state === "reconnecting");
  for (const n of [2, 3, 4]) await publish(n);
  gate = null;
  release();
  await until(() => recovered.length === 1);
  await publish(5);
  await until(() => contents.length >= 5);
  client.close();
  return {contents, recovered, urls, position: client.position, authenticated: sent.length};
}"""


@pytest.mark.parametrize("first_message", [False, True], ids=["query", "first-message"])
async def test_browser_client_resumes_from_its_last_offset(
    browser: Browser, instances: tuple[AppProcess, AppProcess], first_message: bool
) -> None:
    page, sockets = await new_page(browser)
    await page.goto(instances[1].http + "/static/switchboard.js")
    # Instance b: the failover test may already have killed instance a.
    ws_url = instances[1].http.replace("http", "ws")
    channel = f"browser-resume-{int(first_message)}"
    result: dict[str, Any] = await page.evaluate(
        RESUME_CHECK, {"wsUrl": ws_url, "channel": channel, "firstMessage": first_message, "apiKey": TEST_API_KEY}
    )
    await page.close()
    # What was published while it was away came first, once each, then the live stream.
    assert result["contents"] == [1, 2, 3, 4, 5]
    [recovered] = result["recovered"]
    assert (recovered["ok"], recovered["count"]) == (True, 3)
    assert "since=" not in result["urls"][0]
    if first_message:  # the position went in the auth message: the URL stays as it was
        assert result["urls"][1] == result["urls"][0]
        assert result["authenticated"] == 2
    else:
        assert f"since={recovered['offset'] - 3}" in result["urls"][1]
        assert f"epoch={recovered['epoch']}" in result["urls"][1]
    assert result["position"] == {"offset": recovered["offset"] + 1, "epoch": recovered["epoch"]}
    assert sockets == result["urls"]  # exactly two connections, as the browser saw them


async def test_client_backoff_and_queue_bounds_in_the_browser(
    browser: Browser, instances: tuple[AppProcess, AppProcess]
) -> None:
    page, _ = await new_page(browser)
    await page.goto(instances[1].http + "/static/switchboard.js")
    result: dict[str, Any] = await page.evaluate(CLIENT_UNIT_CHECKS)
    await page.close()
    for attempt, (low, high) in enumerate(result["bounds"]):
        ceiling = min(5000, 100 * 2**attempt)
        assert low == 0
        assert ceiling - 1 <= high < ceiling
    assert result["sampleMin"] >= 0
    assert result["sampleMax"] < 800
    assert 300 < result["sampleMean"] < 500  # uniform on [0, 800): mean 400
    assert result["dropped"] == [1, 2]
    assert result["drained"] == [3, 4, 5]
    assert result["sizeAfter"] == 0
    assert result["clientQueue"] == ['{"x":"c"}', '{"x":"d"}']
    assert result["clientDropped"] == ['{"x":"a"}', '{"x":"b"}']
    assert result["terminal"] == [1003, 1008, 4003, 4004]
    # Refusals and the server's disconnects stop the client; connection troubles retry.
    assert result["stops"] == [True] * 6 + [False] * 6


PROTOCOL_CHECK = """async ({apiKey, user}) => {
  const m = await import("/static/switchboard.js");
  const until = async (check, what) => {
    for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
    if (!check()) throw new Error("timed out: " + what);
  };
  const api = (method, body) => fetch(`/api/v1/${method}`, {
    method: "POST", headers: {"Content-Type": "application/json", "X-API-Key": apiKey}, body: JSON.stringify(body),
  }).then((r) => r.json());
  const fresh = async () => (await (await fetch("/dev/token", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({sub: user, ttl: 3}),
  })).json()).token;
  const out = {};
  // 1. A getToken that keeps working: the 3-second token is refreshed before it expires.
  let tokens = 0;
  const sb = new m.Switchboard({url: "/ws", getToken: async () => { tokens += 1; return fresh(); }});
  const messages = [], pubs = [];
  let assigned = null;
  sb.addEventListener("message", (e) => messages.push(e.detail.data));
  sb.addEventListener("sub", (e) => {
    assigned = e.detail.channel;
    e.detail.subscription.handlers.publication = (pub) => pubs.push(pub.data);
  });
  sb.connect();
  await until(() => sb.ready, "connected");
  await api("send", {user, data: "hi from the backend"});
  await until(() => messages.length === 1, "the message");
  await api("subscribe", {user, channel: `assigned-${user}`});
  await until(() => assigned, "the server-side subscription");
  out.offset = await sb.publish(`assigned-${user}`, "mine too");
  await api("publish", {channel: `assigned-${user}`, data: "for you"});
  await until(() => pubs.length === 2, "both publications");
  await until(() => tokens >= 3, "two refreshes");  // past the first token's expiry and grace
  Object.assign(out, {messages, pubs, assigned, connections: sb.connections, state: sb.state});
  sb.close();
  // 2. A refresh that fails: the server closes 4002; the reconnect fetches a fresh token.
  let calls = 0;
  const closes = [];
  const lapsing = new m.Switchboard({baseDelay: 10, url: "/ws", getToken: async () => {
    calls += 1;
    if (calls === 2) throw new Error("refresh refused");
    return fresh();
  }});
  lapsing.addEventListener("close", (e) => closes.push(e.detail.code));
  lapsing.connect();
  await until(() => closes.length === 1 && lapsing.ready, "closed 4002, then back");
  Object.assign(out, {lapsedCloses: closes, lapsedConnections: lapsing.connections});
  lapsing.close();
  return out;
}"""


async def test_the_browser_client_refreshes_its_token_and_takes_server_pushes(
    browser: Browser, instances: tuple[AppProcess, AppProcess]
) -> None:
    page, _ = await new_page(browser)
    await page.goto(instances[1].http + "/static/switchboard.js")
    result: dict[str, Any] = await page.evaluate(PROTOCOL_CHECK, {"apiKey": TEST_API_KEY, "user": "js-user"})
    await page.close()
    assert result["messages"] == ["hi from the backend"]
    assert result["assigned"] == "assigned-js-user"
    assert result["pubs"] == ["mine too", "for you"]
    assert result["offset"] == 1
    assert (result["connections"], result["state"]) == (1, "open")  # refreshed, never closed
    assert result["lapsedCloses"] == [4002]
    assert result["lapsedConnections"] == 2
