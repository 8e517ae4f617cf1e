"""The server API on three instances sharing a real Redis: every method, and every bad input."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.auth import mint_token
from app.config import Settings
from tests.integration.wsproto import all_connected, connected, is_pub
from tests.support import (
    API_HEADERS,
    TEST_API_KEY,
    TEST_SECRET,
    AppProcess,
    RedisServer,
    expect_close,
    recv_json,
    running,
    wait_until,
    ws_connect,
)

CONFIG = """
[namespaces.x]
[namespaces.quiet]
presence = false
[namespaces.team]
join_leave = true
"""


@dataclass
class Three:
    redis: RedisServer
    apps: tuple[AppProcess, AppProcess, AppProcess]

    def call(
        self, method: str, body: Any = None, *, on: int = 0, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        url = f"{self.apps[on].http}/api/v1/{method}"
        content = body if isinstance(body, bytes) else orjson.dumps(body if body is not None else {})
        return httpx.post(url, content=content, headers=API_HEADERS if headers is None else headers, timeout=10)

    def ok(self, method: str, body: Any = None, *, on: int = 0) -> dict[str, Any]:
        response = self.call(method, body, on=on)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


def start_three(tmp: Path, env: dict[str, str] | None = None) -> tuple[RedisServer, tuple[AppProcess, ...]]:
    config = tmp / "switchboard.toml"
    config.write_text(CONFIG)
    redis_server = RedisServer(tmp / "redis").start()
    env = {"SWITCHBOARD_BROKER_URL": redis_server.url, "SWITCHBOARD_CONFIG": str(config), **(env or {})}
    return redis_server, tuple(AppProcess(name, tmp, env) for name in ("a", "b", "c"))


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Three]:
    redis_server, apps = start_three(tmp_path_factory.mktemp("three"), {"SWITCHBOARD_PRESENCE_TTL": "3"})
    try:
        with running(*apps):
            yield Three(redis_server, apps)  # type: ignore[arg-type]
    finally:
        redis_server.stop()


def user_token(sub: str, ttl: float = 600, **claims: Any) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, sub.title(), ttl, **claims)


# -- credentials and bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong-key-0123456789-abcdefghijklmnopqrstuvwxyz"},
        {"X-API-Key": "short"},
        {"X-API-Key": TEST_API_KEY[:-1]},
        {"Authorization": f"Bearer {TEST_API_KEY}"},
        {"Authorization": f"apikey {TEST_API_KEY}x"},
        {"X-API-Key": "user-jwt"},
        {"Authorization": "Bearer user-jwt"},
    ],
)
def test_every_call_without_the_key_is_401(three: Three, headers: dict[str, str]) -> None:
    headers = {k: v.replace("user-jwt", user_token("ann")) for k, v in headers.items()}
    for method in ("publish", "info", "no-such-method"):
        response = three.call(method, {"channel": "x:a", "data": 1}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == 101


def test_both_header_spellings_are_accepted(three: Three) -> None:
    for headers in (API_HEADERS, {"Authorization": f"apikey {TEST_API_KEY}"}):
        assert three.call("info", headers=headers).status_code == 200


def test_an_unknown_method_lists_the_methods_in_the_reply(three: Three) -> None:
    """Not "see /docs": the docs are off outside dev mode, and the apps here are not in dev mode."""
    assert httpx.get(three.apps[0].http + "/docs").status_code == 404
    error = three.call("publsh", {"channel": "x:a", "data": 1}).json()["error"]
    assert error["code"] == 104
    assert error["message"] == "no method 'publsh' (did you mean 'publish'?); the methods are in \"methods\""
    assert "publish" in error["methods"]
    assert all(three.call(method).status_code != 404 for method in error["methods"])
    assert "did you mean" not in three.call("zzz").json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "body", "status", "code"),
    [
        ("no-such-method", {}, 404, 104),
        ("publish", b"", 400, 107),  # empty: no channel
        ("publish", b"not json", 400, 107),
        ("publish", b'{"channel":"x:a","data":NaN}', 400, 107),
        ("publish", b"[1,2]", 400, 107),
        ("publish", b'{"channel":"x:a","data":' + b"[" * 2000 + b"]" * 2000 + b"}", 400, 107),
        ("publish", b'{"channel":"x:a","data":' + b"[" * 300 + b"]" * 300 + b"}", 400, 107),
        ("publish", {"channel": "x:a", "data": 1, "extra": 2}, 400, 107),
        ("publish", {"channel": "bad channel", "data": 1}, 422, 107),
        ("publish", {"channel": "nowhere:a", "data": 1}, 422, 102),
        ("publish", {"channel": "x:a", "data": 1, "idempotency_key": "has space"}, 400, 107),
        ("publish", {"channel": "x:a", "data": "x" * 66_000}, 413, 106),
        ("disconnect", {"user": "u", "code": 1000}, 400, 107),
        ("presence", {"channel": "quiet:a"}, 400, 108),
        ("presence_stats", {"channel": "quiet:a"}, 400, 108),
        ("presence", {"channel": "x:a", "cursor": "not-ours"}, 400, 107),
        ("presence", {"channel": "x:a", "cursor": "z1x"}, 400, 107),
        ("history", {"channel": "x:a", "limit": 0}, 400, 107),
    ],
)
def test_bad_input_gets_its_status_and_code_never_a_500(
    three: Three, method: str, body: Any, status: int, code: int
) -> None:
    response = three.call(method, body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert isinstance(response.json()["error"]["message"], str)


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_bodies_are_refused_before_they_are_read_whole(three: Three, chunked: bool) -> None:
    big = b'{"channel":"x:a","data":"' + b"x" * 200_000 + b'"}'
    url = f"{three.apps[0].http}/api/v1/publish"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    response = httpx.post(url, content=chunks() if chunked else big, headers=API_HEADERS, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 106


def test_user_commands_for_nobody_connected_are_fine(three: Three) -> None:
    assert three.ok("send", {"user": "nobody", "data": 1}) == {}
    assert three.ok("disconnect", {"user": "nobody"}) == {}


# -- publishing -----------------------------------------------------------------------------------


async def test_publish_and_broadcast_reach_subscribers_on_every_instance(three: Three) -> None:
    protos = []
    async with (
        connected(three.apps[0].ws("/ws")) as p0,
        connected(three.apps[1].ws("/ws")) as p1,
        connected(three.apps[2].ws("/ws")) as p2,
    ):
        protos = [p0, p1, p2]
        for proto in protos:
            await proto.ok("subscribe", channel="x:api-one")
            await proto.ok("subscribe", channel="x:api-two")
        first = three.ok("publish", {"channel": "x:api-one", "data": {"n": 1}}, on=1)
        assert first["offset"] == 1
        results = three.ok("broadcast", {"channels": ["x:api-one", "x:api-two", "bad channel"], "data": "all"})
        assert [r["channel"] for r in results["results"]] == ["x:api-one", "x:api-two", "bad channel"]
        assert results["results"][0]["offset"] == 2
        assert results["results"][2]["error"]["code"] == 107
        for proto in protos:
            one = await proto.pubs("x:api-one", 2)
            assert [p["data"] for p in one] == [{"n": 1}, "all"]
            assert "info" not in one[0]  # the server is not a client
            assert (await proto.push(is_pub("x:api-two")))["data"] == "all"


async def test_an_idempotent_publish_retried_on_another_instance_is_delivered_once(three: Three) -> None:
    async with connected(three.apps[2].ws("/ws")) as proto:
        await proto.ok("subscribe", channel="x:idem-api")
        body = {"channel": "x:idem-api", "data": "charge", "idempotency_key": "invoice-7"}
        first = three.ok("publish", body, on=0)
        assert three.ok("publish", body, on=1) == first
        assert three.ok("publish", body, on=2) == first
        assert [p["data"] for p in await proto.pubs("x:idem-api", 1)] == ["charge"]
        assert await proto.quiet(0.3) == []


async def test_idempotency_keys_are_the_publishers_own(three: Three) -> None:
    """A subscriber who publishes the backend's next key first does not swallow its publish; each
    user's and each anonymous connection's keys are their own too, and retries are still absorbed."""
    channel = "x:idem-scope"
    key = {"idempotency_key": "announcement-7"}
    async with all_connected(
        (three.apps[0].ws("/ws"), None),
        (three.apps[1].ws("/ws"), user_token("alice")),
        (three.apps[2].ws("/ws"), user_token("alice")),
        (three.apps[0].ws("/ws"), user_token("bob")),
        (three.apps[1].ws("/ws"), None),
    ) as protos:
        forger, alice_b, alice_c, bob, other = protos
        for proto in protos:
            await proto.ok("subscribe", channel=channel)
        forged = await forger.ok("publish", channel=channel, data="forged", **key)
        body = {"channel": channel, "data": "real", **key}
        real = three.ok("publish", body, on=1)
        assert real["offset"] == forged["offset"] + 1
        assert three.ok("publish", body, on=2) == real  # the backend's retry, elsewhere
        again = await forger.ok("publish", channel=channel, data="forged", **key)
        assert again["offset"] == forged["offset"]  # the same connection's retry
        mine = await alice_b.ok("publish", channel=channel, data="alice", **key)
        retried = await alice_c.ok("publish", channel=channel, data="alice", **key)
        assert retried["offset"] == mine["offset"] == real["offset"] + 1  # one user, two instances
        theirs = await bob.ok("publish", channel=channel, data="bob", **key)
        anonymous = await other.ok("publish", channel=channel, data="other", **key)
        assert (theirs["offset"], anonymous["offset"]) == (mine["offset"] + 1, mine["offset"] + 2)
        for proto in protos:
            assert [p["data"] for p in await proto.pubs(channel, 5)] == ["forged", "real", "alice", "bob", "other"]
            assert [p for p in await proto.quiet(0.2) if is_pub(channel)(p)] == []


async def test_history_presence_channels_and_info(three: Three) -> None:
    for n in range(5):
        three.ok("publish", {"channel": "x:hist", "data": n})
    history = three.ok("history", {"channel": "x:hist", "limit": 2}, on=2)
    assert [p["data"] for p in history["publications"]] == [3, 4]
    assert history["offset"] == 5
    tokens = [user_token(f"user{n % 4}", info={"n": n}) for n in range(12)]
    async with all_connected(*((three.apps[n % 3].ws("/ws"), tokens[n]) for n in range(12))) as protos:
        for proto in protos:
            await proto.ok("subscribe", channel="x:crowd")
        assert three.ok("presence_stats", {"channel": "x:crowd"}) == {"clients": 12, "users": 4}
        seen, cursor, pages = [], None, 0
        while True:
            page = three.ok("presence", {"channel": "x:crowd", "limit": 5, **({"cursor": cursor} if cursor else {})})
            assert len(page["clients"]) <= 5
            seen += page["clients"]
            pages += 1
            cursor = page["cursor"]
            if cursor is None:
                break
        assert pages >= 3
        assert {c["client"] for c in seen} == {p.client_id for p in protos}
        assert sorted(c["info"]["n"] for c in {c["client"]: c for c in seen}.values()) == list(range(12))
        channels = three.ok("channels", {"prefix": "x:cr"})["channels"]
        assert channels == [{"channel": "x:crowd", "clients": 12}]
        instances = three.ok("info")["instances"]
        assert sorted(i["id"] for i in instances) == ["a", "b", "c"]
        # Each instance reports its count every PRESENCE_TTL/3 (1 s here).
        wait_until(lambda: sum(i["connections"] for i in three.ok("info")["instances"]) >= 12, 3, "counts")


# -- users ----------------------------------------------------------------------------------------


async def test_send_reaches_every_connection_of_the_user_and_nobody_else(three: Three) -> None:
    async with (
        connected(three.apps[0].ws("/ws"), user_token("sam")) as s0,
        connected(three.apps[1].ws("/ws"), user_token("sam")) as s1,
        connected(three.apps[2].ws("/ws"), user_token("sam")) as s2,
        connected(three.apps[2].ws("/ws"), user_token("other")) as other,
    ):
        started = time.monotonic()
        three.ok("send", {"user": "sam", "data": {"text": "your export is ready"}}, on=1)
        for proto in (s0, s1, s2):
            push = await proto.push(lambda f: f.get("op") == "message", timeout=1)
            assert push == {"op": "message", "data": {"text": "your export is ready"}}
        assert time.monotonic() - started < 1
        assert await other.quiet(0.3) == []


async def test_disconnect_closes_every_connection_of_the_user_everywhere(three: Three) -> None:
    dan = [(three.apps[n].ws("/ws"), user_token("dan")) for n in range(3)]
    async with (
        all_connected(*dan) as protos,
        ws_connect(three.apps[1].ws(f"/ws/secure?token={user_token('dan')}")) as tutorial,
    ):
        await recv_json(tutorial)  # auth_success: signed in
        three.ok("disconnect", {"user": "dan", "code": 4010, "reason": "account suspended"}, on=2)
        for proto in protos:
            assert await expect_close(proto.ws, timeout=1) == (4010, "account suspended")
        assert await expect_close(tutorial, timeout=1) == (4010, "account suspended")
    async with connected(three.apps[0].ws("/ws"), user_token("dan")) as again:
        three.ok("disconnect", {"user": "dan"})
        assert (await expect_close(again.ws, timeout=1))[0] == 4003
    async with connected(three.apps[1].ws("/ws"), user_token("dan")) as long_reason:
        three.ok("disconnect", {"user": "dan", "reason": "é" * 120})  # 240 bytes of UTF-8
        code, reason = await expect_close(long_reason.ws, timeout=1)
        assert code == 4003
        assert reason == "é" * 61  # cut to fit a close frame's 123 bytes, on a character boundary


async def test_server_side_subscribe_and_unsubscribe_on_every_instance(three: Three) -> None:
    async with (
        connected(three.apps[0].ws("/ws"), user_token("sue")) as s0,
        connected(three.apps[2].ws("/ws"), user_token("sue")) as s2,
    ):
        three.ok("subscribe", {"user": "sue", "channel": "x:assigned"}, on=1)
        for proto in (s0, s2):
            sub = await proto.push(lambda f: f.get("op") == "sub", timeout=1)
            assert sub["channel"] == "x:assigned"
        three.ok("publish", {"channel": "x:assigned", "data": "welcome"})
        for proto in (s0, s2):
            assert (await proto.push(is_pub("x:assigned")))["data"] == "welcome"
        three.ok("unsubscribe", {"user": "sue", "channel": "x:assigned"})
        for proto in (s0, s2):
            unsub = await proto.push(lambda f: f.get("op") == "unsub", timeout=1)
            assert (unsub["channel"], unsub["code"]) == ("x:assigned", 2000)
        three.ok("publish", {"channel": "x:assigned", "data": "gone"})
        for proto in (s0, s2):
            assert [f for f in await proto.quiet(0.3) if f.get("data") == "gone"] == []


# -- questions every instance answers (app/cluster_query.py) ---------------------------------------


async def test_top_channels_user_connections_and_info_cover_every_instance(three: Three) -> None:
    a, b, c = three.apps
    ivy = user_token("ivy")
    async with all_connected((a.ws("/ws"), ivy), (b.ws("/ws"), ivy), (c.ws("/ws"), user_token("jo"))) as protos:
        ivy_a, ivy_b, jo = protos
        for proto in protos:
            await proto.ok("subscribe", channel="x:hot")
        await ivy_a.ok("subscribe", channel="x:warm")
        await jo.ok("subscribe", channel="x:warm")
        await ivy_b.ok("subscribe", channel="x:cool")
        for n in range(5):
            three.ok("publish", {"channel": "x:hot", "data": n})
        three.ok("publish", {"channel": "x:cool", "data": "once"})
        for proto in protos:
            await proto.pubs("x:hot", 5)
        # Subscribers add up across instances; the rate is the same publications on each, so not summed.
        top = three.ok("top_channels", {"limit": 100}, on=1)
        assert (top["answered"], top["missing"]) == (3, [])
        mine = [row for row in top["channels"] if row["channel"] in ("x:hot", "x:warm", "x:cool")]
        assert [(r["channel"], r["subscribers"]) for r in mine] == [("x:hot", 3), ("x:warm", 2), ("x:cool", 1)]
        hot = mine[0]["rate"]
        assert 5 / 20 <= hot <= 5 / 10  # 5 in this window, over one to two 10 s windows
        by_rate = three.ok("top_channels", {"sort": "rate", "limit": 100})["channels"]
        assert [r["channel"] for r in by_rate if r["channel"] in ("x:hot", "x:cool")] == ["x:hot", "x:cool"]
        # Every connection of a user, on whichever instance holds it, with its channels.
        found = three.ok("user_connections", {"user": "ivy"}, on=2)
        assert (found["answered"], found["missing"]) == (3, [])
        assert [(x["instance"], x["client"], x["channels"]) for x in found["connections"]] == [
            ("a", ivy_a.client_id, ["x:hot", "x:warm"]),
            ("b", ivy_b.client_id, ["x:cool", "x:hot"]),
        ]
        assert three.ok("user_connections", {"user": "nobody"})["connections"] == []
        # info: what the operator's instance view shows, from each instance's last heartbeat.
        wait_until(lambda: all(i["channels"] >= 1 for i in three.ok("info")["instances"]), 3, "channel counts")
        for entry in three.ok("info")["instances"]:
            assert entry["uptime"] > 0
            assert (entry["draining"], entry["redis"]) == (False, "up")


async def test_an_instance_that_does_not_answer_is_named_missing(three: Three) -> None:
    stopped = three.apps[2]
    assert stopped.proc is not None
    os.kill(stopped.proc.pid, signal.SIGSTOP)  # alive and listed (its entry outlives 2 s), but silent
    try:
        started = time.monotonic()
        found = three.ok("user_connections", {"user": "ivy"})
        assert time.monotonic() - started >= 2.0  # it waited for the slowest, up to the deadline
        assert (found["answered"], found["missing"]) == (2, ["c"])
        assert three.ok("top_channels")["missing"] == ["c"]
    finally:
        os.kill(stopped.proc.pid, signal.SIGCONT)
    wait_until(lambda: three.ok("top_channels")["missing"] == [], 5, "c answers again")


def test_top_channels_and_user_connections_bodies_are_checked(three: Three) -> None:
    for method, body in (
        ("top_channels", {"limit": 101}),
        ("top_channels", {"sort": "name"}),
        ("user_connections", {}),
        ("user_connections", {"user": ""}),
        ("user_connections", {"user": "ivy", "extra": 1}),
    ):
        response = three.call(method, body)
        assert response.status_code == 400, (method, body, response.text)
        assert response.json()["error"]["code"] == 107


def test_the_admin_ui_is_off_by_default(three: Three) -> None:
    for method, path in (("GET", "/admin"), ("POST", "/admin/signin"), ("POST", "/admin/api/info")):
        response = httpx.request(method, three.apps[0].http + path, timeout=5)
        assert response.status_code == 404, (method, path, response.text)
    assert httpx.get(three.apps[0].http + "/admin/static/admin.js", timeout=5).status_code == 404
