"""Switchboard's own channels and keys are out of reach of every client name, in every configuration.

Two instances on one real Redis, without a namespaces file (the README's quick start), once in
production mode and once in dev mode. An anonymous client used to subscribe to
``switchboard:users`` (reading every user command, and deafening its instance when it left) or
cycle ``switchboard:control`` (the listener's probe went unseen and it reconnected).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import orjson
import pytest

from app.errors import RESERVED_CHANNEL, CloseCode
from tests.integration.conftest import Cluster, start_cluster, token
from tests.integration.wsproto import connected
from tests.support import API_HEADERS, expect_close, running, ws_connect

# Every internal pub/sub channel and key prefix, and spellings that fold to them.
FOLDED = [
    "switchboard:users",
    "switchboard:control",
    "switchboard:probe:0",
    "switchboard:user:alice",
    "switchboard:presence-expiries",
    "switchboard:instances",
    "sb:chat",
    "Switchboard:Users",
    "SWITCHBOARD:control",
    "\uff53\uff57\uff49\uff54\uff43\uff48\uff42\uff4f\uff41\uff52\uff44:users",  # full-width letters
    "\u017fwitchboard:control",  # long s
]
CYRILLIC = "\u0455witchboard:users"  # survives folding; refused because a namespace is ASCII
MODES = {"production": {}, "dev": {"SWITCHBOARD_DEV_MODE": "true"}}


@pytest.fixture(scope="module", params=list(MODES))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp(f"reserved-{request.param}")
    redis_server, a, b = start_cluster(workdir, MODES[request.param])
    try:
        with running(a, b):
            yield Cluster(redis_server, a, b, workdir)
    finally:
        redis_server.stop()


def api(cluster: Cluster, method: str, body: object) -> httpx.Response:
    return httpx.post(f"{cluster.a.http}/api/v1/{method}", content=orjson.dumps(body), headers=API_HEADERS, timeout=10)


def reconnects(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = re.search(r"^switchboard_broker_reconnects_total (\S+)$", text, re.M)
    assert found is not None, text[:500]
    return float(found.group(1))


async def test_ws_refuses_every_internal_name_and_its_look_alikes(pair: Cluster) -> None:
    async with connected(pair.a.ws("/ws")) as proto:
        for name in [*FOLDED, CYRILLIC]:
            code = 107 if name == CYRILLIC else 102
            forged = {"op": "disconnect", "user": "alice"}
            for op in ("subscribe", "publish", "history", "presence", "presence_stats"):
                reply = await proto.call(op, channel=name, **({"data": forged} if op == "publish" else {}))
                assert reply["ok"] is False, (op, name, reply)
                assert reply["error"]["code"] == code, (op, name, reply)
                if code == 102:
                    assert reply["error"]["message"] == RESERVED_CHANNEL
        assert (await proto.call("unsubscribe", channel="switchboard:users"))["error"]["code"] == 110


async def test_the_server_api_refuses_every_internal_name_with_422(pair: Cluster) -> None:
    for name in [*FOLDED, CYRILLIC]:
        code = 107 if name == CYRILLIC else 102
        for method, body in (
            ("publish", {"channel": name, "data": 1}),
            ("subscribe", {"user": "alice", "channel": name}),
            ("unsubscribe", {"user": "alice", "channel": name}),
            ("presence", {"channel": name}),
            ("presence_stats", {"channel": name}),
            ("history", {"channel": name}),
        ):
            response = api(pair, method, body)
            assert response.status_code == 422, (method, name, response.text)
            assert response.json()["error"]["code"] == code, (method, name, response.text)
        results = api(pair, "broadcast", {"channels": [name], "data": 1}).json()["results"]
        assert results[0]["error"]["code"] == code
    for name in FOLDED:
        for response in (
            httpx.post(f"{pair.a.http}/api/global/{quote(name)}", json={"content": 1}, headers=API_HEADERS),
            httpx.get(f"{pair.a.http}/api/presence/{quote(name)}", headers=API_HEADERS),
        ):
            assert response.status_code == 422, (name, response.text)
            assert response.json()["error"] == {"code": 102, "message": RESERVED_CHANNEL}


async def test_tutorial_endpoints_close_1008_with_the_reason(pair: Cluster) -> None:
    for name in FOLDED:
        for path in (f"/ws/room/{quote(name)}", f"/ws/global/{quote(name)}"):
            async with ws_connect(pair.a.ws(path)) as ws:
                assert await expect_close(ws) == (CloseCode.POLICY_VIOLATION, RESERVED_CHANNEL), path


async def test_no_client_can_read_or_deafen_user_commands_or_make_the_listener_reconnect(pair: Cluster) -> None:
    """The attack as reported, on both instances at once; then alice must still be reachable."""
    redis = pair.redis.client()
    async with (
        connected(pair.a.ws("/ws"), token("alice")) as alice_a,
        connected(pair.b.ws("/ws"), token("alice")) as alice_b,
        connected(pair.a.ws("/ws")) as spy_a,
        connected(pair.b.ws("/ws")) as spy_b,
    ):
        for spy in (spy_a, spy_b):
            for name in ("switchboard:users", "switchboard:control", "Switchboard:users"):
                await spy.call("subscribe", channel=name)
        for spy in (spy_a, spy_b):
            for name in ("switchboard:users", "switchboard:control", "Switchboard:users"):
                await spy.call("unsubscribe", channel=name)
        # A subscribe confirmed by Redis after the spies left: it travels on the same pub/sub
        # connection, after any UNSUBSCRIBE an instance sent on their behalf.
        barrier = f"x:barrier-{uuid.uuid4().hex[:8]}"
        async with connected(pair.a.ws("/ws")) as one, connected(pair.b.ws("/ws")) as two:
            await one.ok("subscribe", channel=barrier)
            await two.ok("subscribe", channel=barrier)
        numsub = dict(redis.pubsub_numsub("switchboard:users", "switchboard:control"))
        assert numsub == {b"switchboard:users": 2, b"switchboard:control": 2}

        assert api(pair, "send", {"user": "alice", "data": {"secret": "reset-code-123"}}).status_code == 200
        for alice in (alice_a, alice_b):
            message = await alice.push(lambda frame: frame.get("op") == "message")
            assert message["data"] == {"secret": "reset-code-123"}
        assert api(pair, "disconnect", {"user": "alice", "reason": "account suspended"}).status_code == 200
        for alice in (alice_a, alice_b):
            assert await expect_close(alice.ws) == (4003, "account suspended")
        for spy in (spy_a, spy_b):
            assert not [frame for frame in await spy.quiet(0.3) if "reset-code-123" in orjson.dumps(frame).decode()]
    for app in (pair.a, pair.b):
        assert reconnects(app.http) == 0
        assert "pub/sub connection lost" not in app.log_text()


async def test_cycling_the_control_channel_many_times_leaves_it_subscribed(pair: Cluster) -> None:
    redis = pair.redis.client()
    async with connected(pair.a.ws("/ws")) as spy:
        for _ in range(20):
            for op in ("subscribe", "unsubscribe"):
                await spy.call(op, channel="switchboard:control")
        await spy.ok("subscribe", channel=f"x:barrier-{uuid.uuid4().hex[:8]}")  # after any UNSUBSCRIBE
    assert dict(redis.pubsub_numsub("switchboard:control")) == {b"switchboard:control": 2}
    assert reconnects(pair.a.http) == 0
