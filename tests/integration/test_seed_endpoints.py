"""Every tutorial endpoint's wire format, against two real instances sharing a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import pytest

from app.errors import AUTH_REQUIRED, INVALID_TOKEN, MISSING_CONTENT, UNKNOWN_TYPE
from tests.integration.conftest import Cluster, token
from tests.support import TEST_SECRET, expect_close, positioned, recv_json, recv_until, send_json, ws_connect


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {
        "SWITCHBOARD_HEARTBEAT_INTERVAL": "0.3",
        "SWITCHBOARD_HEARTBEAT_TIMEOUT": "0.5",
        "SWITCHBOARD_AUTH_TIMEOUT": "0.5",
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_echo(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws/echo")) as ws:
        await ws.send("hello")
        assert await ws.recv() == "Echo: hello"


async def test_ping_pong_and_close(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws/ping")) as ws:
        assert await recv_json(ws) == {"type": "connected", "message": "WebSocket ready"}
        await send_json(ws, {"type": "ping", "timestamp": 123.5})
        pong = await recv_json(ws)
        assert pong["type"] == "pong"
        assert pong["timestamp"] == 123.5
        assert abs(pong["server_time"] - time.time()) < 5
        await send_json(ws, {"type": "nope"})
        assert await recv_json(ws) == {"type": "error", "message": UNKNOWN_TYPE}
        await send_json(ws, {"type": "close"})
        code, _ = await expect_close(ws)
        assert code == 1000


async def test_room_across_instances(cluster: Cluster) -> None:
    room = unique("r")
    async with ws_connect(cluster.a.ws(f"/ws/room/{room}")) as first:
        cluster.wait_presence(f"room:{room}", 1)
        async with ws_connect(cluster.b.ws(f"/ws/room/{room}")) as second:
            assert positioned(await recv_json(first)) == {"type": "user_joined", "room": room, "members": 2}
            await send_json(second, {"content": "from b"})
            assert positioned(await recv_json(first)) == {"type": "message", "room": room, "content": "from b"}
            await send_json(first, {"content": {"nested": [1, 2]}})
            # The sender is excluded: the next frame `first` sees is the reply, not its own message.
            assert positioned(await recv_json(second)) == {
                "type": "message",
                "room": room,
                "content": {"nested": [1, 2]},
            }
            await send_json(second, {"content": "reply"})
            assert (await recv_json(first))["content"] == "reply"
            await send_json(second, {"no": "content"})
            assert await recv_json(second) == {"type": "error", "message": MISSING_CONTENT}
        assert positioned(await recv_json(first)) == {"type": "user_left", "room": room, "members": 1}


async def test_global_reaches_every_subscriber_exactly_once(cluster: Cluster) -> None:
    channel = unique("g")
    sockets = []
    try:
        for i in range(6):
            app = cluster.a if i % 2 else cluster.b
            sockets.append(await ws_connect(app.ws(f"/ws/global/{channel}")))
        cluster.wait_presence(f"global:{channel}", 6)
        for n in range(5):
            await send_json(sockets[n % 6], {"content": n})
        for ws in sockets:
            got = [await recv_json(ws) for _ in range(5)]
            # Publishes come from different sockets, so order across senders is not guaranteed.
            assert sorted(f["content"] for f in got) == [0, 1, 2, 3, 4]
            assert all(f["channel"] == channel for f in got)
        # Exactly once: a final marker is the very next frame everywhere, no duplicate before it.
        await send_json(sockets[0], {"content": "end"})
        for ws in sockets:
            assert positioned(await recv_json(ws)) == {"content": "end", "channel": channel}
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


async def test_secure_accepts_a_valid_token(cluster: Cluster) -> None:
    async with ws_connect(cluster.b.ws(f"/ws/secure?token={token('u1', 'Ann')}")) as ws:
        assert await recv_json(ws) == {"type": "auth_success", "user": "Ann", "user_id": "u1"}
        await send_json(ws, {"content": "hi"})
        assert await recv_json(ws) == {"type": "echo", "from": "Ann", "content": "hi"}


def bad_tokens() -> dict[str, str]:
    now = int(time.time())
    return {
        "missing": "",
        "garbage": "abc.def.ghi",
        "expired": jwt.encode({"sub": "u", "exp": now - 10}, TEST_SECRET, algorithm="HS256"),
        "wrong_secret": jwt.encode({"sub": "u", "exp": now + 60}, "w" * 48, algorithm="HS256"),
        "alg_none": jwt.encode({"sub": "u", "exp": now + 60}, "", algorithm="none"),
        "alg_not_pinned": jwt.encode({"sub": "u", "exp": now + 60}, TEST_SECRET + "x" * 20, algorithm="HS512"),
    }


@pytest.mark.parametrize("case", sorted(bad_tokens()))
async def test_secure_refuses_bad_tokens_with_1008(cluster: Cluster, case: str) -> None:
    query = f"?token={bad_tokens()[case]}" if case != "missing" else ""
    async with ws_connect(cluster.a.ws(f"/ws/secure{query}")) as ws:
        code, reason = await expect_close(ws)
    assert code == 1008
    assert reason.startswith("Authentication failed")


async def test_auth_first_happy_path(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws/auth-first")) as ws:
        assert await recv_json(ws) == {"type": "auth_required"}
        await send_json(ws, {"type": "auth", "token": token("u2", "Bo")})
        assert (await recv_json(ws))["type"] == "auth_success"
        await send_json(ws, {"anything": 1})
        assert await recv_json(ws) == {"type": "ack", "user": "Bo"}


@pytest.mark.parametrize(
    ("first", "error"),
    [
        ('{"type":"hello"}', AUTH_REQUIRED),
        ("not json", AUTH_REQUIRED),
        ('{"type":"auth","token":"bad"}', INVALID_TOKEN),
    ],
)
async def test_auth_first_refusals(cluster: Cluster, first: str, error: str) -> None:
    async with ws_connect(cluster.a.ws("/ws/auth-first")) as ws:
        await recv_json(ws)
        await ws.send(first)
        assert await recv_json(ws) == {"type": "error", "message": error}
        code, _ = await expect_close(ws)
    assert code == 1008


async def test_auth_first_times_out_silent_clients(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws/auth-first")) as ws:
        await recv_json(ws)
        code, reason = await expect_close(ws, timeout=5)
    assert (code, reason) == (1008, "Authentication timeout")


async def test_heartbeat_keeps_answering_clients_alive(cluster: Cluster) -> None:
    async with ws_connect(cluster.b.ws("/ws/with-heartbeat")) as ws:
        for _ in range(3):  # three rounds: well past interval + timeout
            assert await recv_json(ws) == {"type": "ping"}
            await send_json(ws, {"type": "pong"})
        await send_json(ws, {"data": 42})
        assert await recv_until(ws, lambda f: f != {"type": "ping"}) == {"echo": {"data": 42}}


async def test_heartbeat_closes_silent_clients(cluster: Cluster) -> None:
    async with ws_connect(cluster.b.ws("/ws/with-heartbeat")) as ws:
        assert await recv_json(ws) == {"type": "ping"}
        code, reason = await expect_close(ws, timeout=5)
    assert code == 4001
    assert "Heartbeat" in reason
