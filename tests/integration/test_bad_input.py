"""Bad input gets a clear answer, and everyone else keeps being served."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection

from app.errors import INVALID_JSON, NOT_AN_OBJECT, ORIGIN_REFUSED, RATE_LIMITED
from tests.integration.conftest import Cluster, token
from tests.support import expect_close, recv_json, send_json, ws_connect

MAX_BYTES = 1024
BURST = 5


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {
        "SWITCHBOARD_MAX_MESSAGE_BYTES": str(MAX_BYTES),
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "2",
        "SWITCHBOARD_RATE_LIMIT_BURST": str(BURST),
        "SWITCHBOARD_ALLOWED_ORIGINS": "https://good.example",
    }


@pytest.fixture
async def room(cluster: Cluster) -> AsyncIterator[tuple[str, ClientConnection]]:
    """A room with a bystander on the other instance, who must stay unaffected."""
    name = uuid.uuid4().hex[:8]
    async with ws_connect(cluster.b.ws(f"/ws/room/{name}")) as bystander:
        cluster.wait_presence(f"room:{name}", 1)
        yield name, bystander


async def bystander_still_served(cluster: Cluster, name: str, bystander: ClientConnection) -> None:
    async with ws_connect(cluster.a.ws(f"/ws/room/{name}")) as other:
        assert (await recv_json(bystander))["type"] == "user_joined"
        await send_json(other, {"content": "still here?"})
        assert (await recv_json(bystander))["content"] == "still here?"


async def test_oversized_frame_is_closed_with_1009(cluster: Cluster, room: tuple[str, ClientConnection]) -> None:
    name, bystander = room
    async with ws_connect(cluster.a.ws(f"/ws/room/{name}")) as ws:
        await recv_json(bystander)  # its join notice
        await send_json(ws, {"content": "x" * (MAX_BYTES + 10)})
        code, _ = await expect_close(ws)
    assert code == 1009
    assert (await recv_json(bystander))["type"] == "user_left"
    await bystander_still_served(cluster, name, bystander)


async def test_binary_frame_is_closed_with_1003(cluster: Cluster, room: tuple[str, ClientConnection]) -> None:
    name, bystander = room
    async with ws_connect(cluster.a.ws(f"/ws/room/{name}")) as ws:
        assert (await recv_json(bystander))["type"] == "user_joined"
        await ws.send(b"\x00\x01binary")
        code, reason = await expect_close(ws)
    assert (code, reason) == (1003, "Binary frames are not supported")
    assert (await recv_json(bystander))["type"] == "user_left"
    await bystander_still_served(cluster, name, bystander)


@pytest.mark.parametrize(
    ("text", "error"), [("{not json", INVALID_JSON), ("[1, 2]", NOT_AN_OBJECT), ("7", NOT_AN_OBJECT)]
)
async def test_invalid_json_gets_an_error_frame_and_the_socket_lives(
    cluster: Cluster, room: tuple[str, ClientConnection], text: str, error: str
) -> None:
    name, bystander = room
    async with ws_connect(cluster.a.ws(f"/ws/room/{name}")) as ws:
        await recv_json(bystander)
        await ws.send(text)
        assert await recv_json(ws) == {"type": "error", "message": error}
        await send_json(ws, {"content": "valid now"})
        assert (await recv_json(bystander))["content"] == "valid now"


async def test_flood_gets_error_frames_then_1008(cluster: Cluster, room: tuple[str, ClientConnection]) -> None:
    name, bystander = room
    async with ws_connect(cluster.a.ws(f"/ws/room/{name}")) as ws:
        await recv_json(bystander)
        for i in range(100):
            await send_json(ws, {"content": i})
        errors = 0
        code, reason = None, ""
        try:
            while True:
                frame = await recv_json(ws)
                assert frame == {"type": "error", "message": RATE_LIMITED}
                errors += 1
        except Exception:
            code, reason = await expect_close(ws)
    assert (code, reason) == (1008, RATE_LIMITED)
    assert errors >= 1
    # The burst got through, then the limiter held (a token or two may refill during the flood).
    delivered = []
    while (frame := await recv_json(bystander))["type"] != "user_left":
        delivered.append(frame["content"])
    assert delivered[:BURST] == list(range(BURST))
    assert len(delivered) <= BURST + 2
    await bystander_still_served(cluster, name, bystander)


async def test_disallowed_origin_is_refused(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws/echo"), origin="https://evil.example") as ws:
        code, reason = await expect_close(ws)
    assert (code, reason) == (1008, ORIGIN_REFUSED)


async def test_allowed_and_same_origin_are_accepted(cluster: Cluster) -> None:
    for origin in ("https://good.example", f"http://127.0.0.1:{cluster.a.port}"):
        async with ws_connect(cluster.a.ws("/ws/echo"), origin=origin) as ws:
            await ws.send("ok")
            assert await ws.recv() == "Echo: ok"


async def test_tokens_never_reach_the_logs(cluster: Cluster) -> None:
    good, bad = token("log-user"), token("x") + "tampered"
    async with ws_connect(cluster.a.ws(f"/ws/secure?token={good}")) as ws:
        assert (await recv_json(ws))["type"] == "auth_success"
    async with ws_connect(cluster.a.ws(f"/ws/secure?token={bad}")) as ws:
        await expect_close(ws)
    log = cluster.a.log_text()
    assert "/ws/secure?token=[redacted]" in log  # the handshake was logged, without its token
    assert good not in log
    assert bad not in log
    assert good.split(".")[1] not in log
