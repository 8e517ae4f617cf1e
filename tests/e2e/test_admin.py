"""The admin web UI (/admin) in real headless Chromium, against two instances sharing a redis-server.

Real /ws clients (tests/integration/wsproto.py) are connected to both instances: each view shows
them, and each action's effect is what those clients receive. Screenshots of every view land in
test-artifacts/ (the ones in docs/ are copies of these, looked at).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, expect

from app.admin_auth import FAILURES
from app.auth import mint_token
from app.config import Settings
from tests.e2e.test_browser import ARTIFACTS, TIMEOUT, browser, screenshot  # noqa: F401 (the browser fixture)
from tests.integration.wsproto import Proto, connected, is_pub
from tests.support import API_HEADERS, TEST_SECRET, AppProcess, RedisServer, expect_close, running, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

PASSWORD = "admin-password-0123456789-abcdefghijklmnop"
ADMIN = "ops-alice"
SHOT: ViewportSize = {"width": 1000, "height": 620}


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppProcess, AppProcess]]:
    tmp = tmp_path_factory.mktemp("admin")
    redis_server = RedisServer(tmp / "redis").start()
    env = {
        "SWITCHBOARD_BROKER_URL": redis_server.url,
        "SWITCHBOARD_ADMIN": "true",
        "SWITCHBOARD_ADMIN_PASSWORD": PASSWORD,
        "SWITCHBOARD_PRESENCE_TTL": "3",  # info's entries are at most 1 s old
        "SWITCHBOARD_PING_INTERVAL": "300",  # the test's clients read only when a test awaits them
    }
    a, b = AppProcess("a", tmp, env), AppProcess("b", tmp, env)
    try:
        with running(a, b):
            yield a, b
    finally:
        redis_server.stop()


def token(user: str) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), user, user.title(), 600)


@dataclass
class Clients:
    alice_a: Proto
    alice_b: Proto
    bob: Proto
    mallory: Proto


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clients(instances: tuple[AppProcess, AppProcess]) -> AsyncIterator[Clients]:
    a, b = instances
    async with contextlib.AsyncExitStack() as stack:
        join = stack.enter_async_context
        found = Clients(
            await join(connected(a.ws("/ws"), token("alice"))),
            await join(connected(b.ws("/ws"), token("alice"))),
            await join(connected(b.ws("/ws"), token("bob"))),
            # Client text that would be markup if the UI ever wrote it as HTML.
            await join(connected(a.ws("/ws"), token('<img src=x onerror="window.pwned=1">'))),
        )
        for proto in (found.alice_a, found.alice_b, found.bob, found.mallory):
            await proto.ok("subscribe", channel="lobby")
        await found.alice_a.ok("subscribe", channel="quiet")
        yield found


HTTP = httpx.Client(headers=API_HEADERS, timeout=5)  # one keep-alive connection per instance


def publish(app: AppProcess, channel: str, data: Any) -> None:
    response = HTTP.post(f"{app.http}/api/v1/publish", json={"channel": channel, "data": data})
    assert response.status_code == 200, response.text


async def open_view(page: Page, app: AppProcess, view: str) -> None:
    """Load ``/admin#<view>`` afresh (a goto that only changes the hash would not reload)."""
    await page.goto(f"{app.http}/admin#{view}")
    await page.reload()


async def sign_in(page: Page, app: AppProcess, name: str, password: str) -> int:
    await page.goto(app.http + "/admin")
    await page.fill('input[name="name"]', name)
    await page.fill('input[name="password"]', password)
    async with page.expect_response(lambda r: r.url.endswith("/admin/signin")) as answer:
        await page.click('button[type="submit"]')
    status: int = (await answer.value).status
    return status


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(browser: Browser, instances: tuple[AppProcess, AppProcess]) -> AsyncIterator[tuple[Page, list[str]]]:  # noqa: F811
    """A page signed in on instance a, and every console error and failed response it has had."""
    context = await browser.new_context(viewport=SHOT)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(instances[0].http + "/admin")
    await expect(page.locator("h1")).to_have_text("Switchboard admin")
    await screenshot(page, "admin-signin.png")
    assert await sign_in(page, instances[0], ADMIN, PASSWORD) == 303
    await expect(page.locator("#admin-name")).to_have_text(ADMIN)
    yield page, problems
    await context.close()


async def test_sign_in_sets_a_strict_http_only_cookie_and_shows_the_instances(
    admin: tuple[Page, list[str]], instances: tuple[AppProcess, AppProcess], clients: Clients
) -> None:
    page, problems = admin
    [cookie] = await page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        "sb_admin",
        True,
        "Strict",
        "/admin",
    )
    assert "sb_admin" not in await page.evaluate("document.cookie")  # scripts cannot read it
    # Every admin response carries the strict policy: no inline script, nothing from elsewhere.
    response = await page.request.get(instances[0].http + "/admin")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    rows = page.locator("#instances tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text(re.compile(r"^a\s*\S+\s*\d+h \d+m \d+s\s*2\s*2\s*up\s*no$"))
    await expect(rows.nth(1)).to_contain_text(re.compile(r"^b\s*\S+\s*\d+h \d+m \d+s\s*2\s*1\s*up\s*no$"))
    await screenshot(page, "admin-instances.png")
    assert problems == []


async def test_the_busiest_channels_with_subscribers_and_publication_rates(
    admin: tuple[Page, list[str]], instances: tuple[AppProcess, AppProcess], clients: Clients
) -> None:
    page, problems = admin
    for n in range(3):
        publish(instances[1], "lobby", {"n": n})
    await clients.bob.pubs("lobby", 3)
    await page.click("#nav-channels")
    rows = page.locator("#channels tbody tr")
    await expect(rows.first).to_contain_text(re.compile(r"^lobby\s*4\s*0\.[1-3]\d$"))  # 3 over 10-20 s
    await expect(page.locator("#channels")).to_contain_text("quiet")
    await page.get_by_role("button", name="by rate").click()
    await expect(rows.first).to_contain_text("lobby")
    await screenshot(page, "admin-channels.png")
    await rows.first.locator("a").click()
    await expect(page.locator("#channel-name")).to_have_text("lobby")
    assert problems == []


async def test_a_channels_presence_history_and_live_tail_are_paged_bounded_and_escaped(
    admin: tuple[Page, list[str]], instances: tuple[AppProcess, AppProcess], clients: Clients
) -> None:
    page, problems = admin
    publish(instances[0], "lobby", '<script>window.pwned=2</script><b onmouseover="x">bold</b>')
    await open_view(page, instances[0], "/channel/lobby")
    presence = page.locator("#presence")
    await expect(presence.locator("h3")).to_have_text("Presence: 4 connection(s), 3 user(s)")
    await expect(presence.locator("tbody tr")).to_have_count(4)
    await expect(presence).to_contain_text('<img src=x onerror="window.pwned=1">')  # as text
    history = page.locator("#history")
    await expect(history).to_contain_text("<script>window.pwned=2</script>")
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("#view img, #view script, #view b").count() == 0
    # History pages: the newest 20, then older ones.
    for n in range(25):
        publish(instances[1], "lobby", {"page": n})
    await page.reload()
    await expect(history.locator("tbody tr")).to_have_count(20)
    await expect(history.locator("tbody tr").last).to_contain_text('{"page":24}')
    await page.click("#history-older")
    await expect(history.locator("tbody tr").last).to_contain_text('{"page":4}')
    # The live tail shows what is published from now on, and keeps at most its last 100.
    await page.check("#tail-on")
    publish(instances[1], "lobby", {"tail": "first"})
    await expect(page.locator("#tail-rows")).to_contain_text('{"tail":"first"}')
    await page.screenshot(path=str(ARTIFACTS / "admin-channel.png"), full_page=True)
    for n in range(120):
        publish(instances[0], "lobby", {"tail": n})
    await expect(page.locator("#tail-rows tr").last).to_contain_text('{"tail":119}')
    await expect(page.locator("#tail-rows tr")).to_have_count(100)
    await expect(page.locator("#tail-rows tr").first).to_contain_text('{"tail":20}')
    await page.uncheck("#tail-on")
    for proto in (clients.alice_a, clients.alice_b, clients.bob, clients.mallory):
        await proto.quiet(0)  # drop what those publications brought
    assert problems == []


async def test_publish_and_unsubscribe_actions_reach_real_ws_clients(
    admin: tuple[Page, list[str]], instances: tuple[AppProcess, AppProcess], clients: Clients
) -> None:
    page, problems = admin
    await open_view(page, instances[0], "/channel/quiet")
    await page.fill("#publish textarea", '{"text": "from the admin UI"}')
    await page.click("#publish button")
    await expect(page.locator("#status")).to_contain_text("published to quiet at offset 1")
    pub = await clients.alice_a.push(is_pub("quiet"))
    assert pub["data"] == {"text": "from the admin UI"}
    # Unsubscribe bob from lobby, from its presence page: his socket on instance b is told.
    await open_view(page, instances[0], "/channel/lobby")
    bob_row = page.locator("#presence tbody tr", has_text="bob")
    await bob_row.get_by_role("button", name="Unsubscribe").click()
    unsub = await clients.bob.push(lambda f: f.get("op") == "unsub")
    assert (unsub["channel"], unsub["code"]) == ("lobby", 2000)
    await expect(page.locator("#status")).to_have_text("unsubscribed bob from lobby")
    await expect(page.locator("#presence tbody tr")).to_have_count(3)
    # Each action is logged with the admin's name, and counted.
    logged = re.compile(rf"admin {ADMIN} \(session [0-9a-f]{{16}}\): (publish|unsubscribe) ")
    wait_until(lambda: len(set(logged.findall(instances[0].log_text()))) == 2, 5, "both actions logged")
    text = httpx.get(instances[0].http + "/metrics", timeout=5).text
    assert 'switchboard_admin_actions_total{method="publish",outcome="ok"} 1.0' in text
    assert 'switchboard_admin_actions_total{method="unsubscribe",outcome="ok"} 1.0' in text
    assert problems == []


async def test_a_users_connections_across_the_cluster_and_disconnect(
    admin: tuple[Page, list[str]], instances: tuple[AppProcess, AppProcess], clients: Clients
) -> None:
    page, problems = admin
    await page.fill("#goto-user input", "alice")
    await page.press("#goto-user input", "Enter")
    await expect(page.locator("#user-name")).to_have_text("alice")
    rows = page.locator("#connections tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text(f"{clients.alice_a.client_id}awslobby, quiet")
    await expect(rows.nth(1)).to_contain_text(f"{clients.alice_b.client_id}bwslobby")
    await screenshot(page, "admin-user.png")
    await page.fill("#disconnect input", "maintenance")
    await page.click("#disconnect button")
    for proto in (clients.alice_a, clients.alice_b):
        assert await expect_close(proto.ws, timeout=5) == (4003, "maintenance")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("no connections anywhere in the cluster")
    assert "admin ops-alice" in instances[0].log_text()
    assert problems == []


CSRF_CHECK = """async () => {
  const post = (path, headers, body) => fetch(path, {method: "POST", headers, body})
    .then(async (r) => ({status: r.status, type: r.headers.get("content-type"), body: await r.json()}));
  const json = {"Content-Type": "application/json"};
  const publish = JSON.stringify({channel: "lobby", data: "forged"});
  return {
    none: await post("/admin/api/publish", json, publish),
    wrong: await post("/admin/api/publish", {...json, "X-CSRF-Token": "not-the-token"}, publish),
    signout: await post("/admin/signout", {"Content-Type": "application/x-www-form-urlencoded"}, "csrf="),
  };
}"""


async def test_a_post_without_the_csrf_token_is_refused_with_403_json(
    admin: tuple[Page, list[str]], instances: tuple[AppProcess, AppProcess], clients: Clients
) -> None:
    page, problems = admin
    await open_view(page, instances[0], "/instances")
    await clients.mallory.quiet(0.5)  # what earlier tests published
    result: dict[str, Any] = await page.evaluate(CSRF_CHECK)  # the session cookie goes with each
    for name in ("none", "wrong", "signout"):
        assert result[name]["status"] == 403, (name, result)
        assert result[name]["type"] == "application/json"
        assert result[name]["body"]["error"]["code"] == 103
    assert [f for f in await clients.mallory.quiet(0.5) if is_pub("lobby")(f)] == []  # nothing forged
    # Still signed in (the forged sign-out did nothing), and without a session the API is 401.
    await expect(page.locator("#admin-name")).to_have_text(ADMIN)
    problems.clear()  # the console's three "403 Forbidden" lines: this test's own refusals
    anonymous = httpx.post(instances[0].http + "/admin/api/info", json={}, timeout=5)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, 101)
    assert "default-src 'none'" in anonymous.headers["content-security-policy"]


async def test_wrong_passwords_are_limited_to_the_bound_per_address(
    browser: Browser,  # noqa: F811
    instances: tuple[AppProcess, AppProcess],
) -> None:
    b = instances[1]  # its own limiter: the signed-in page on a is not affected
    context: BrowserContext = await browser.new_context(viewport=SHOT)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    for attempt in range(FAILURES):
        assert await sign_in(page, b, ADMIN, f"wrong-{attempt}") == 401
        await expect(page.locator("#error")).to_have_text("Wrong name or password.")
    # The bound is reached: even the right password is refused until the window passes.
    assert await sign_in(page, b, ADMIN, PASSWORD) == 429
    await expect(page.locator("#error")).to_contain_text("Too many failed sign-ins: try again in")
    assert await context.cookies() == []
    text = httpx.get(b.http + "/metrics", timeout=5).text
    assert f'switchboard_admin_sign_ins_total{{outcome="refused"}} {float(FAILURES)}' in text
    assert 'switchboard_admin_sign_ins_total{outcome="limited"} 1.0' in text
    await screenshot(page, "admin-limited.png")
    await context.close()


async def test_sign_out_ends_the_session(
    admin: tuple[Page, list[str]], instances: tuple[AppProcess, AppProcess]
) -> None:
    page, problems = admin
    await open_view(page, instances[0], "/instances")
    await page.click("#signout button")
    await expect(page.locator("h1")).to_have_text("Switchboard admin")
    assert await page.context.cookies() == []
    assert problems == []
