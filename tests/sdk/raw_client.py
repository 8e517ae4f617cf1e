"""A raw client of ``/connection/websocket`` in either encoding, for bad input and frame-level
checks: commands are JSON protocol dicts, replies and pushes come back as dicts.

Protobuf commands are built, and replies read, with centrifuge-python's own compiled client.proto
and framing, not with Switchboard's schema, so that the server's encoding is checked against another's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
from centrifuge.codecs import _ProtobufCodec, _varint_encode
from centrifuge.protocol import client_pb2
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support import AppProcess, ws_connect

# The SDK's own framing (its codec module, pinned with it): each message after its varint length.
varint: Callable[[int], bytes] = _varint_encode
pb_replies: Callable[[bytes], list[dict[str, Any]]] = _ProtobufCodec.decode_replies


def pb_command(command: dict[str, Any]) -> bytes:
    """A JSON protocol command as a length-delimited Protobuf Command (``data`` as JSON bytes)."""
    cmd = client_pb2.Command(id=command.get("id", 0))
    for method, params in command.items():
        if method == "id":
            continue
        request = getattr(cmd, method)
        request.SetInParent()
        for key, value in params.items():
            setattr(request, key, orjson.dumps(value) if key == "data" else value)
    body: bytes = cmd.SerializeToString()
    return varint(len(body)) + body


class Client:
    """A raw client in one encoding: commands as JSON protocol dicts, replies as dicts."""

    def __init__(self, ws: ClientConnection, protobuf: bool) -> None:
        self.ws, self.protobuf = ws, protobuf

    @classmethod
    async def connect(cls, app: AppProcess, protobuf: bool) -> Client:
        subprotocols: Any = ["centrifuge-protobuf"] if protobuf else None
        ws = await ws_connect(app.ws("/connection/websocket"), subprotocols=subprotocols)
        assert ws.subprotocol == ("centrifuge-protobuf" if protobuf else None)
        client = cls(ws, protobuf)
        await client.send({"id": 1, "connect": {}})
        assert "connect" in (await client.reply(1))
        return client

    async def send(self, *commands: dict[str, Any]) -> None:
        if self.protobuf:
            await self.ws.send(b"".join(pb_command(c) for c in commands))
        else:
            await self.ws.send("\n".join(orjson.dumps(c).decode() for c in commands))

    async def frames(self, timeout: float = 10) -> list[dict[str, Any]]:
        """The next frame's replies and pushes; pings are answered and left out."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            if self.protobuf:
                assert isinstance(raw, bytes), "a Protobuf connection gets binary frames only"
                found = pb_replies(raw)
            else:
                found = [orjson.loads(line) for line in str(raw).split("\n")]
            if any(not reply for reply in found):
                await self.ws.send(b"\x00" if self.protobuf else "{}")
            found = [reply for reply in found if reply]
            if found:
                return found

    async def reply(self, cmd_id: int) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                for reply in await self.frames():
                    if reply.get("id") == cmd_id:
                        return reply

    async def closed(self) -> tuple[int | None, str]:
        """Read until the server closes; its close code and reason."""
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(10):
                while True:
                    await self.ws.recv()
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")
