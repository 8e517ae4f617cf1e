"""Bad input on ``/connection/websocket``, in Protobuf (and in JSON where test_centrifuge_wire.py
has no such case): each gets its documented error or close (docs/sdks.md), and another client on
the same channel receives every message published meanwhile.

Protobuf commands are built, and replies read, with centrifuge-python's own compiled client.proto,
not with Switchboard's schema."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from centrifuge.protocol import client_pb2
from websockets.exceptions import ConnectionClosed

from tests.sdk.raw_client import Client, varint
from tests.sdk.sdk_support import BURST, LIMITS, MAX_BYTES, NAMESPACES, api, instance, token
from tests.support import API_HEADERS, AppProcess, ws_connect

PUBLISHED_MEANWHILE = 10


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    with instance(tmp_path_factory.mktemp("centrifuge-bad-input"), NAMESPACES, LIMITS, "bad-input") as found:
        yield found


class Observer:
    """A JSON subscriber of ``channel`` that records every publication's offset."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.offsets: list[int] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def watch(cls, app: AppProcess, channel: str) -> Observer:
        observer = cls(await Client.connect(app, protobuf=False))
        await observer.client.send({"id": 2, "subscribe": {"channel": channel}})
        assert "subscribe" in await observer.client.reply(2)
        observer._task = asyncio.create_task(observer._read())
        return observer

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                for reply in await self.client.frames(timeout=60):
                    if "pub" in reply.get("push", {}):
                        self.offsets.append(reply["push"]["pub"]["offset"])

    async def saw_everything(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.offsets) < count:  # noqa: ASYNC110 - the reader task appends
                await asyncio.sleep(0.02)
        assert self.offsets == list(range(1, count + 1))
        assert self._task is not None
        self._task.cancel()
        await self.client.ws.close()


async def publish_meanwhile(app: AppProcess, channel: str) -> None:
    async with httpx.AsyncClient(headers=API_HEADERS, timeout=5) as http:
        for n in range(PUBLISHED_MEANWHILE):
            response = await http.post(f"{app.http}/api/v1/publish", json={"channel": channel, "data": {"n": n}})
            response.raise_for_status()


async def while_observed(app: AppProcess, channel: str, bad: Any) -> Any:
    """Run ``bad`` while the server API publishes to ``channel``; the observer must see it all."""
    observer = await Observer.watch(app, channel)
    outcome, _ = await asyncio.gather(bad, publish_meanwhile(app, channel))
    await observer.saw_everything(PUBLISHED_MEANWHILE)
    return outcome


BAD_FRAMES = {
    "invalid protobuf": b"\x03\xff\xff\xff",  # one 3-byte message: field 31, wire type 7 (none)
    "truncated varint": b"\x80",
    "message length over the limit": varint(MAX_BYTES + 1),
    "truncated message": b"\x10\x08\x01",  # 16 bytes announced, 2 sent
}


@pytest.mark.parametrize("reason", [*BAD_FRAMES, "a text frame on a protobuf connection"])
async def test_broken_protobuf_frames_close_3501_with_the_reason(app: AppProcess, reason: str) -> None:
    channel = f"chat:bad-{reason.replace(' ', '-')}"

    async def bad() -> tuple[int | None, str]:
        client = await Client.connect(app, protobuf=True)
        await client.send({"id": 2, "subscribe": {"channel": channel}})
        assert "subscribe" in await client.reply(2)
        await client.ws.send(BAD_FRAMES.get(reason, '{"id":3,"publish":{"channel":"x","data":1}}'))
        return await client.closed()

    assert await while_observed(app, channel, bad()) == (3501, reason)


async def test_a_first_frame_that_is_not_protobuf_closes_3501(app: AppProcess) -> None:
    ws = await ws_connect(app.ws("/connection/websocket"), subprotocols=["centrifuge-protobuf"])
    await ws.send(b"\x80")
    assert await Client(ws, protobuf=True).closed() == (3501, "truncated varint")


@pytest.mark.parametrize("protobuf", [True, False], ids=["protobuf", "json"])
async def test_a_frame_over_the_size_limit_closes_the_connection(app: AppProcess, protobuf: bool) -> None:
    channel = f"chat:bad-size-{protobuf}"

    async def bad() -> int | None:
        client = await Client.connect(app, protobuf=protobuf)
        big = {"id": 2, "publish": {"channel": channel, "data": "x" * MAX_BYTES}}
        await client.send(big)
        return (await client.closed())[0]

    # The WebSocket layer refuses the frame before Switchboard reads it (docs/sdks.md).
    assert await while_observed(app, channel, bad()) == 1009


async def test_unknown_protobuf_commands_answer_104(app: AppProcess) -> None:
    channel = "chat:bad-unknown"

    async def bad() -> list[int]:
        client = await Client.connect(app, protobuf=True)
        unknown = client_pb2.Command(id=2).SerializeToString() + b"\xfa\x06\x00"  # field 111, empty
        later = client_pb2.Command(id=3).SerializeToString() + b"\xc2\x07\x00"  # field 120, empty
        await client.ws.send(varint(len(unknown)) + unknown + varint(len(later)) + later)
        codes = [(await client.reply(2))["error"]["code"], (await client.reply(3))["error"]["code"]]
        await client.send({"id": 4, "subscribe": {"channel": channel}})  # the connection goes on
        assert "subscribe" in await client.reply(4)
        await client.ws.close()
        return codes

    assert await while_observed(app, channel, bad()) == [104, 104]


@pytest.mark.parametrize("protobuf", [True, False], ids=["protobuf", "json"])
async def test_a_reused_command_id_is_answered_each_time_in_order(app: AppProcess, protobuf: bool) -> None:
    """Documented: ids are the client's to match; each command is run and answered, in order."""
    channel = f"chat:bad-reuse-{protobuf}"

    async def bad() -> list[dict[str, Any]]:
        client = await Client.connect(app, protobuf=protobuf)
        await client.send(
            {"id": 2, "subscribe": {"channel": channel}}, {"id": 2, "presence_stats": {"channel": channel}}
        )
        replies: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(replies) < 2:
                replies += [r for r in await client.frames() if r.get("id") == 2]
        await client.ws.close()
        return replies

    first, second = await while_observed(app, channel, bad())
    assert "subscribe" in first
    assert "presence_stats" in second


async def test_subscribing_twice_in_protobuf_is_105_and_keeps_the_connection(app: AppProcess) -> None:
    channel = "chat:bad-twice"

    async def bad() -> int:
        client = await Client.connect(app, protobuf=True)
        await client.send({"id": 2, "subscribe": {"channel": channel}}, {"id": 3, "subscribe": {"channel": channel}})
        assert "subscribe" in await client.reply(2)
        code: int = (await client.reply(3))["error"]["code"]
        await client.send({"id": 4, "presence_stats": {"channel": channel}})
        assert "presence_stats" in await client.reply(4)
        await client.ws.close()
        return code

    assert await while_observed(app, channel, bad()) == 105


async def test_ten_thousand_protobuf_commands_in_one_frame_run_no_further_than_the_rate_limit(
    app: AppProcess,
) -> None:
    channel, flood_channel = "chat:bad-flood-watch", "chat:bad-flood"

    async def bad() -> tuple[int, int, int | None]:
        client = await Client.connect(app, protobuf=True)
        await client.send({"id": 2, "subscribe": {"channel": flood_channel}})
        await client.reply(2)
        await client.send(*({"id": 10 + n, "publish": {"channel": flood_channel, "data": n}} for n in range(10_000)))
        ok = limited = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                for reply in await client.frames():
                    if "publish" in reply:
                        ok += 1
                    elif reply.get("error", {}).get("code") == 111:
                        limited += 1
        rcvd = client.ws.protocol.close_rcvd
        return ok, limited, rcvd.code if rcvd else None

    ok, limited, code = await while_observed(app, channel, bad())
    assert code == 3501  # the client kept on past the limit, as in JSON
    assert 0 < ok <= BURST + 5, (ok, limited)
    assert limited <= 2 * BURST + 5, (ok, limited)
    history = api(app, "history", {"channel": flood_channel})
    assert len(history["publications"]) == ok  # exactly what was answered ok was published


async def test_send_arrives_as_a_protobuf_message_push(app: AppProcess) -> None:
    """(centrifuge-python has no handler for it; the message push in Protobuf, read as bytes.)"""
    ws = await ws_connect(app.ws("/connection/websocket"), subprotocols=["centrifuge-protobuf"])
    client = Client(ws, protobuf=True)
    await client.send({"id": 1, "connect": {"token": token("pb-sent")}})
    await client.reply(1)
    api(app, "send", {"user": "pb-sent", "data": {"note": 1}})
    async with asyncio.timeout(10):
        while not (pushes := [r["push"] for r in await client.frames() if "message" in r.get("push", {})]):
            pass
    assert orjson.loads(base64.b64decode(pushes[0]["message"]["data"])) == {"note": 1}
    await ws.close()
