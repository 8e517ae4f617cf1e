"""The backend decides over HTTP: every proxy against a real FastAPI backend (uvicorn, its own process).

One app instance (memory broker) points every proxy at tests/integration/proxy_backend.py, whose
behaviour the client picks (the connect command's ``data.do``, the channel, the rpc method). The
backend counts calls and calls in flight, so the concurrency bound is asserted on its side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import async_playwright

from switchboard_client.realtime import Client, CommandError
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.backends import Backend, proxied
from tests.integration.test_ws_protocol import user_token
from tests.integration.wsproto import Proto, connected, is_pub
from tests.sse import events, next_data
from tests.support import AppProcess, expect_close, running, wait_until, ws_connect

TIMEOUT = 1.0
CONCURRENCY = 3
CONFIG = """
[namespaces.px]
subscribe = "granted"
subscribe_proxy = "{url}/subscribe"
[namespaces.pp]
publish = "granted"
publish_proxy = "{url}/publish"
[namespaces.team]
subscribe = "granted"
[rpc.proxies]
"backend." = "{url}/rpc"
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Backend, AppProcess]]:
    env = {
        "SWITCHBOARD_HOOKS": "tests.integration.proxy_hooks:hooks",
        "SWITCHBOARD_CONNECT_PROXY_URL": "{url}/connect",
        "SWITCHBOARD_REFRESH_PROXY_URL": "{url}/refresh",
        "SWITCHBOARD_PROXY_TIMEOUT": str(TIMEOUT),
        "SWITCHBOARD_PROXY_MAX_CONCURRENCY": str(CONCURRENCY),
        "SWITCHBOARD_PROXY_EMULATED_HEADERS": "Cookie,User-Agent",
        "SWITCHBOARD_REFRESH_GRACE": "1",
    }
    with proxied(tmp_path_factory.mktemp("proxies"), "proxied", CONFIG, env) as found:
        yield found


@pytest.fixture(scope="module")
def server(pair: tuple[Backend, AppProcess]) -> Backend:
    return pair[0]


@pytest.fixture(scope="module")
def app(pair: tuple[Backend, AppProcess]) -> AppProcess:
    return pair[1]


def stats(server: Backend) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{server.url}/stats", timeout=5).json()
    return found


def calls(server: Backend, kind: str) -> int:
    found: int = stats(server)["calls"].get(kind, 0)
    return found


@contextlib.asynccontextmanager
async def signed_in(app: AppProcess, user: str = "alice", **data: Any) -> AsyncIterator[Proto]:
    async with ws_connect(app.ws("/ws")) as ws:
        proto = Proto(ws)
        reply = await proto.ok("connect", data={"user": user, **data})
        proto.client_id = reply["client"]
        yield proto


# -- connect ---------------------------------------------------------------------------------------


async def test_connect_without_a_token_asks_the_backend(app: AppProcess, server: Backend) -> None:
    headers = {
        "Cookie": "session=s3cr3t",
        "Authorization": "Bearer from-the-page",
        "X-Internal-Secret": "never-forwarded",
        "User-Agent": "proxy-test",
    }
    async with ws_connect(app.ws("/ws"), additional_headers=headers) as ws:
        proto = Proto(ws)
        reply = await proto.ok("connect", data={"user": "alice"})
        assert reply["user"] == "alice"
        assert reply["data"] == {"welcome": "alice"}
        assert "hint" not in reply  # data and the Authorization header are read: by the backend
        sent = stats(server)["last"]["connect"]
        assert sent["body"] == {
            "client": reply["client"],
            "transport": "websocket",
            "protocol": "json",
            "encoding": "json",
            "data": {"user": "alice"},
        }
        assert sent["headers"]["cookie"] == "session=s3cr3t"
        assert sent["headers"]["user-agent"] == "proxy-test"
        assert sent["headers"]["authorization"] == "Bearer from-the-page"
        assert "x-internal-secret" not in sent["headers"]  # only the allowlist leaves
        await proto.ok("subscribe", channel="team:blue")  # the answer's channels are grants, as a JWT's
        members = await proto.ok("presence", channel="team:blue")
        assert members["clients"][0]["user"] == "alice"
        assert members["clients"][0]["info"] == {"plan": "pro"}


async def test_a_token_is_verified_as_before_and_never_proxied(app: AppProcess, server: Backend) -> None:
    before = calls(server, "connect")
    async with connected(app.ws("/ws"), user_token("bob")) as proto:
        assert (await proto.ok("rpc", method="hook.who"))["data"]["user"] == "bob"
    assert calls(server, "connect") == before


@pytest.mark.parametrize(
    ("do", "code", "close"),
    [
        ("deny", 1403, 1008),  # the backend's own code reaches the client
        ("disconnect", 103, 4501),  # the backend's disconnect code and reason close the socket
        ("slow", 113, 1013),  # fail closed: try again later
        ("5xx", 113, 1013),
        ("malformed", 113, 1013),
        ("badcode", 113, 1013),  # a code outside 400-1999 is a malformed answer
    ],
)
async def test_a_connect_the_backend_refuses_or_fails_is_closed(
    app: AppProcess, do: str, code: int, close: int
) -> None:
    async with ws_connect(app.ws("/ws")) as ws:
        proto = Proto(ws)
        started = time.monotonic()
        assert await proto.error("connect", data={"do": do}) == code
        assert time.monotonic() - started < TIMEOUT + 2
        found, reason = await expect_close(ws)
        assert found == close
        if do == "disconnect":
            assert reason == "unauthorized"
        elif close == 1013:
            assert reason == "Backend unavailable, try again later"


async def test_concurrency_toward_the_backend_is_bounded(app: AppProcess, server: Backend) -> None:
    httpx.post(f"{server.url}/reset", timeout=5)
    clients = 3 * CONCURRENCY

    async def one(n: int) -> str:
        async with signed_in(app, f"user{n}", do="hold") as proto:
            return proto.client_id

    ids = await asyncio.gather(*(one(n) for n in range(clients)))
    assert len(set(ids)) == clients  # every one connected, queued for a slot, not refused
    found = stats(server)
    assert found["calls"]["connect"] == clients  # one call per connect, none retried
    assert found["max_inflight"] == CONCURRENCY  # the bound, reached and never exceeded


# -- refresh ---------------------------------------------------------------------------------------


async def test_an_expiring_proxied_identity_is_refreshed_by_the_server(app: AppProcess, server: Backend) -> None:
    before = calls(server, "refresh")
    async with signed_in(app, "refresh-ok", ttl=1) as proto:
        wait_until(lambda: calls(server, "refresh") > before, 5, "a refresh call")
        assert stats(server)["last"]["refresh"]["body"]["user"] == "refresh-ok"
        await asyncio.sleep(2)  # past the first expiry and its grace: still open
        assert (await proto.ok("rpc", method="hook.who"))["data"]["user"] == "refresh-ok"
    assert calls(server, "refresh") == before + 1  # renewed for 600 s: asked once


@pytest.mark.parametrize("user", ["refresh-expired", "refresh-5xx"])
async def test_a_refresh_the_backend_refuses_or_fails_closes_4002(app: AppProcess, server: Backend, user: str) -> None:
    before = calls(server, "refresh")
    async with signed_in(app, user, ttl=1) as proto:
        code, _ = await expect_close(proto.ws, timeout=6)
        assert code == 4002
    made = calls(server, "refresh") - before
    # Expired: one call. Failing: retried every quarter of the 1 s grace until it ends, no faster.
    assert made == 1 if user == "refresh-expired" else 2 <= made <= 6


async def test_a_token_refresh_ends_the_server_side_refresh(app: AppProcess, server: Backend) -> None:
    before = calls(server, "refresh")
    async with signed_in(app, "takes-a-token", ttl=600) as proto:
        await proto.ok("refresh", token=user_token("takes-a-token", ttl=2))
        code, _ = await expect_close(proto.ws, timeout=6)  # the token's exp and grace, as any token's
        assert code == 4002
    assert calls(server, "refresh") == before  # the backend was not asked to renew a token


# -- subscribe and publish ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "code"),
    [("px:deny", 1403), ("px:slow", 113), ("px:5xx", 113), ("px:malformed", 113), ("px:badcode", 113)],
)
async def test_subscribe_asks_the_backend_and_fails_closed(
    app: AppProcess, server: Backend, channel: str, code: int
) -> None:
    async with signed_in(app) as proto:
        await proto.ok("subscribe", channel="px:allow")  # a granted namespace: the backend grants
        sent = stats(server)["last"]["subscribe"]["body"]
        assert (sent["user"], sent["channel"], sent["client"]) == ("alice", "px:allow", proto.client_id)
        assert await proto.error("subscribe", channel=channel) == code
        await proto.ok("unsubscribe", channel="px:allow")  # the socket stays open


async def test_a_backend_disconnect_on_subscribe_closes_with_its_code(app: AppProcess) -> None:
    async with signed_in(app) as proto:
        assert await proto.error("subscribe", channel="px:disconnect") == 103
        assert await expect_close(proto.ws) == (4501, "unauthorized")


async def test_publish_asks_the_backend_which_may_rewrite(app: AppProcess, server: Backend) -> None:
    async with signed_in(app) as proto:
        for channel in ("pp:rewrite", "pp:b64", "pp:allow"):
            await proto.ok("subscribe", channel=channel)
        await proto.ok("publish", channel="pp:rewrite", data={"text": "hello"})
        assert (await proto.push(is_pub("pp:rewrite")))["data"] == {"text": "HELLO", "checked": True}
        assert stats(server)["last"]["publish"]["body"]["data"] == {"text": "hello"}
        await proto.ok("publish", channel="pp:b64", data="anything")
        assert (await proto.push(is_pub("pp:b64")))["data"] == {"from": "b64"}
        await proto.ok("publish", channel="pp:allow", data=[1, 2])
        assert (await proto.push(is_pub("pp:allow")))["data"] == [1, 2]  # allowed, unchanged
        for channel, code in (("pp:deny", 1403), ("pp:slow", 113), ("pp:5xx", 113), ("pp:malformed", 113)):
            assert await proto.error("publish", channel=channel, data="x") == code
        assert await proto.quiet(0.3) == []  # nothing refused was published


# -- rpc -----------------------------------------------------------------------------------------------


async def test_rpc_through_the_proxy_and_through_the_hook(app: AppProcess, server: Backend) -> None:
    async with signed_in(app) as proto:
        reply = await proto.ok("rpc", method="backend.echo", data={"n": 1})
        assert reply["data"] == {"echo": {"n": 1}, "user": "alice"}
        sent = stats(server)["last"]["rpc"]["body"]
        assert (sent["method"], sent["data"], sent["client"]) == ("backend.echo", {"n": 1}, proto.client_id)
        for method, code in (("backend.deny", 1403), ("backend.slow", 113), ("backend.5xx", 113)):
            assert await proto.error("rpc", method=method) == code
        assert await proto.error("rpc", method="backend.malformed") == 113
        hooked = await proto.ok("rpc", method="hook.echo", data=[1])
        assert hooked["data"] == {"method": "hook.echo", "echo": [1], "user": "alice"}
        assert await proto.error("rpc", method="hook.deny") == 103
        assert await proto.error("rpc", method="hook.raise") == 100
        assert await proto.error("rpc", method="") == 107
        assert await proto.error("rpc", method="backend.disconnect") == 103
        assert await expect_close(proto.ws) == (4501, "unauthorized")


async def test_every_call_is_counted_by_kind_and_result(app: AppProcess) -> None:
    text = httpx.get(f"{app.http}/metrics", timeout=5).text
    for kind, result in (("connect", "ok"), ("connect", "timeout"), ("connect", "status"), ("rpc", "error")):
        line = f'switchboard_proxy_calls_total{{kind="{kind}",result="{result}"}}'
        assert any(row.startswith(line) and float(row.split()[-1]) >= 1 for row in text.splitlines()), line
    assert 'switchboard_proxy_call_seconds_count{kind="subscribe"}' in text
    assert 'switchboard_command_errors_total{code="backend"}' in text  # backend codes share one label


async def test_rpc_with_neither_proxy_nor_hook_is_104(tmp_path: Path) -> None:
    with running(AppProcess("plain", tmp_path)) as (plain,):
        async with connected(plain.ws("/ws")) as proto:
            found = await proto.call("rpc", method="anything", data=1)
            assert found["error"]["code"] == 104, found
            assert (await proto.call("unsubscribe", channel="x:1"))["error"]["code"] == 110  # still open


# -- the clients' rpc --------------------------------------------------------------------------------


async def test_the_python_client_calls_rpc(app: AppProcess) -> None:
    async with Client(app.ws("/ws")) as client:
        assert await client.rpc("backend.echo", {"n": 2}) == {"echo": {"n": 2}, "user": "alice"}
        with pytest.raises(CommandError) as refused:
            await client.rpc("hook.deny")
        assert refused.value.code == 103


RPC_IN_THE_BROWSER = """async () => {
  const m = await import("/static/switchboard.js");
  const sb = new m.Switchboard({url: "/ws"});
  sb.connect();
  const echo = await sb.rpc("backend.echo", {n: 3});
  let code = null;
  try { await sb.rpc("backend.deny"); } catch (e) { code = e.code; }
  sb.close();
  return {echo, code};
}"""


async def test_the_browser_client_calls_rpc(app: AppProcess) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(app.http + "/static/switchboard.js")
        result = await page.evaluate(RPC_IN_THE_BROWSER)
        await browser.close()
    assert result == {"echo": {"echo": {"n": 3}, "user": "alice"}, "code": 1403}


async def centrifugo_connect(app: AppProcess, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    ws = await ws_connect(app.ws("/connection/websocket"))
    await ws.send(orjson.dumps({"id": 1, "connect": params}).decode())
    return ws, orjson.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_centrifugos_protocol_asks_the_connect_proxy_with_its_emulated_headers(
    app: AppProcess, server: Backend
) -> None:
    headers = {
        "Cookie": "session=emulated",
        "X-Internal-Secret": "never-forwarded",
        # On SWITCHBOARD_PROXY_HEADERS, but not on SWITCHBOARD_PROXY_EMULATED_HEADERS: a client
        # cannot make up the address or the origin the backend is told about.
        "X-Forwarded-For": "203.0.113.66",
        "Origin": "https://evil.example",
        # On both lists, but the handshake has a real one: the real one goes.
        "User-Agent": "made-up-agent",
    }
    ws, reply = await centrifugo_connect(app, {"data": {"user": "zed"}, "headers": headers})
    assert reply["connect"]["data"] == {"welcome": "zed"}
    sent = stats(server)["last"]["connect"]
    assert sent["body"]["data"] == {"user": "zed"}
    assert sent["headers"]["cookie"] == "session=emulated"  # the emulated header, on its allowlist
    assert "x-internal-secret" not in sent["headers"]
    assert "x-forwarded-for" not in sent["headers"]
    assert "origin" not in sent["headers"]
    assert sent["headers"]["user-agent"] != "made-up-agent"
    await ws.send('{"id":2,"subscribe":{"channel":"team:blue"}}')  # the answer's channels are grants
    assert "subscribe" in orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    await ws.close()
    # Any text may come as an emulated header: sent on as UTF-8; one with CR/LF is dropped.
    odd = {"Cookie": "session=é€", "User-Agent": "agent\r\nX-Injected: 1"}
    ws, reply = await centrifugo_connect(app, {"data": {"user": "zed"}, "headers": odd})
    assert reply["connect"]["data"] == {"welcome": "zed"}
    sent = stats(server)["last"]["connect"]
    assert sent["headers"]["cookie"].encode("latin-1").decode() == "session=é€"  # read as latin-1
    assert "x-injected" not in sent["headers"]
    assert "X-Injected" not in sent["headers"].get("user-agent", "")
    await ws.close()


@pytest.mark.parametrize(("do", "code", "close"), [("deny", 1403, 3500), ("disconnect", 103, 4501), ("5xx", 108, 3004)])
async def test_centrifugos_protocol_closes_a_refused_connect_with_its_codes(
    app: AppProcess, do: str, code: int, close: int
) -> None:
    ws, reply = await centrifugo_connect(app, {"data": {"do": do}})
    assert reply["error"]["code"] == code
    found, _ = await expect_close(ws)
    assert found == close


async def test_an_sse_stream_signs_in_with_its_cookie_through_the_connect_proxy(
    app: AppProcess, server: Backend
) -> None:
    """EventSource cannot set headers: with a connect proxy, its cookie is how it signs in."""
    url = f"{app.http}/sse?channel=team:streamed"  # granted by the proxy's answer (team:*) only
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", url, headers={"Cookie": "session=from-the-browser"}) as response:
            assert response.status_code == 200
            assert (await next_data(events(response))).data["channel"] == "team:streamed"
        asked = stats(server)["last"]["connect"]
        assert asked["headers"]["cookie"] == "session=from-the-browser"
        # Centrifugo's name for a one-way SSE stream, so the backend knows what asks.
        assert (asked["body"]["transport"], asked["body"]["protocol"]) == ("uni_sse", "json")
        refused = await http.get(url, headers={"Cookie": "x=1"}, params={"token": "not-a-jwt"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, 101)  # a token is not proxied
