"""A lean WebSocket client for the benchmark: one asyncio Protocol, no per-frame library overhead.

The same client drives every server (Switchboard, the websockets ceiling, the tutorial pattern,
python-socketio), so the load generator costs the same whatever it measures. It speaks plain
WebSocket text frames; for python-socketio, Engine.IO v4 / Socket.IO v5 over a WebSocket; and
for Switchboard's ``/ws`` protocol (flavor ``ws``), ``connect`` and one ``subscribe`` per channel;
for Centrifugo's JSON protocol on ``/connection/websocket`` (flavor ``centrifuge``), ``connect``
then ``subscribe``; and for ``GET /sse`` (flavor ``sse``, bench/sseclient.py), the event stream.

Payloads look like ``{"s": seq, "t": sent_at, "p": padding}``; the server wraps them in its own
frame. ``on_payload(seq, sent_at)`` is called for every one received.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import Any

import orjson

from bench.sseclient import SseClient

# The centrifuge and sse flavors subscribe to the channel a /ws/global/{name} client publishes to,
# so that their publishers are the plain flavor's and only the subscribers' transport differs.
TUTORIAL = "global:"

# Masking is mandatory for clients; an all-zero key is valid and makes masking free.
_MASK = b"\x00\x00\x00\x00"


def text_frame(data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return header + _MASK + data


class Client(asyncio.Protocol):
    def __init__(
        self, host: str, path: str, flavor: str, rooms: list[str], on_payload: Callable[[int, float], None]
    ) -> None:
        self.host, self.path, self.flavor, self.room = host, path, flavor, rooms[0]
        self.rooms = rooms
        self.commands = 0  # /ws: ids sent
        self.pending = 0  # /ws: subscribe replies still awaited
        self.on_payload = on_payload
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    # -- handshake ------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.ready.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.upgraded = True
            if self.flavor == "plain":
                self.ready.set_result(None)
            elif self.flavor == "ws":
                self.command({"op": "connect"})
                for channel in self.rooms:
                    self.command({"op": "subscribe", "channel": channel})
                self.pending = len(self.rooms)
            elif self.flavor == "centrifuge":
                self.centrifuge({"connect": {}})
                for channel in self.rooms:
                    self.centrifuge({"subscribe": {"channel": TUTORIAL + channel}})
                self.pending = len(self.rooms)
        # Frames from a server are never masked.
        while len(buf) >= 2:
            opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, offset = struct.unpack_from("!H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, offset = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            self.on_frame(opcode, payload)

    # -- frames ---------------------------------------------------------------------------------

    def send_text(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(text_frame(data))

    def on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            if self.flavor == "plain":
                self.on_plain(payload)
            elif self.flavor == "ws":
                self.on_ws(payload)
            elif self.flavor == "centrifuge":
                for line in payload.split(b"\n"):  # Centrifugo batches replies and pushes, one per line
                    self.on_centrifuge(line)
            else:
                self.on_socketio(payload)
        elif opcode == 0x9:  # ping: answer with the same payload
            assert self.transport is not None
            self.transport.write(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + _MASK + payload)
        elif opcode == 0x8:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
            if not self.closed.done():
                self.closed.set_result(code)

    def on_plain(self, payload: bytes) -> None:
        frame = orjson.loads(payload)
        content = frame.get("content") if isinstance(frame, dict) else None
        if isinstance(content, dict) and "s" in content:
            self.on_payload(content["s"], content["t"])

    def command(self, fields: dict[str, Any]) -> None:
        self.commands += 1
        self.send_text(orjson.dumps({"id": self.commands, **fields}))

    def on_ws(self, payload: bytes) -> None:
        frame = orjson.loads(payload)
        op = frame.get("op")
        if op == "pub":
            data = frame.get("data")
            if isinstance(data, dict) and "s" in data:
                self.on_payload(data["s"], data["t"])
        elif op == "ping":
            self.send_text(b'{"op":"pong"}')
        elif frame.get("id", 1) > 1:  # a subscribe reply (or, for a publisher, a publish's)
            if not frame.get("ok"):
                raise RuntimeError(f"/ws command failed: {frame}")
            self.pending -= 1
            if self.pending == 0 and not self.ready.done():
                self.ready.set_result(None)

    def centrifuge(self, fields: dict[str, Any]) -> None:
        self.commands += 1
        self.send_text(orjson.dumps({"id": self.commands, **fields}))

    def on_centrifuge(self, line: bytes) -> None:
        if line == b"{}":  # the server's ping: answer with a pong, also {}
            self.send_text(b"{}")
            return
        frame = orjson.loads(line)
        push = frame.get("push")
        if push is not None:
            data = push.get("pub", {}).get("data")
            if isinstance(data, dict) and isinstance(data.get("content"), dict):  # a /ws/global message
                data = data["content"]
            if isinstance(data, dict) and "s" in data:
                self.on_payload(data["s"], data["t"])
        elif frame.get("id", 1) > 1:  # a subscribe reply (or, for a publisher, a publish's)
            if "error" in frame:
                raise RuntimeError(f"/connection/websocket command failed: {frame}")
            self.pending -= 1
            if self.pending == 0 and not self.ready.done():
                self.ready.set_result(None)

    def on_socketio(self, payload: bytes) -> None:
        kind = payload[:1]
        if kind == b"0":  # Engine.IO open: connect to the default namespace
            self.send_text(b"40")
        elif kind == b"2":  # Engine.IO ping
            self.send_text(b"3")
        elif payload.startswith(b"40"):  # namespace connected: join the room
            self.send_text(b'42["join",' + orjson.dumps(self.room) + b"]")
            if not self.ready.done():
                self.ready.set_result(None)
        elif payload.startswith(b"42"):
            event = orjson.loads(payload[2:])
            if event[0] == "message" and isinstance(event[1], dict):
                content = event[1].get("content")
                if isinstance(content, dict) and "s" in content:
                    self.on_payload(content["s"], content["t"])

    def publish(self, channel: str, content: dict[str, Any]) -> None:
        if self.flavor == "plain":
            self.send_text(orjson.dumps({"content": content}))
        elif self.flavor == "ws":
            self.command({"op": "publish", "channel": channel, "data": content})
        else:
            self.send_text(b'42["publish",' + orjson.dumps({"channel": channel, "content": content}) + b"]")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def path_for(flavor: str, channel: str) -> str:
    if flavor == "socketio":
        return "/socket.io/?EIO=4&transport=websocket"
    if flavor == "ws":
        return "/ws"
    if flavor == "centrifuge":
        return "/connection/websocket"
    return f"/ws/global/{channel}"


def publisher_flavor(flavor: str) -> str:
    """Who publishes to a flavor's subscribers: /ws/global clients for the centrifuge and sse ones."""
    return "plain" if flavor in ("centrifuge", "sse") else flavor


async def connect(
    host: str, port: int, channel: str | list[str], flavor: str, on_payload: Callable[[int, float], None]
) -> Client:
    """A connected client; ``channel`` may be several for the ``ws`` flavor (one socket, many channels)."""
    loop = asyncio.get_running_loop()
    rooms = [channel] if isinstance(channel, str) else channel
    _, client = await loop.create_connection(
        lambda: Client(f"{host}:{port}", path_for(flavor, rooms[0]), flavor, rooms, on_payload), host, port
    )
    await asyncio.wait_for(client.ready, 30)
    return client


async def subscribe(
    host: str, port: int, channel: str | list[str], flavor: str, on_payload: Callable[[int, float], None]
) -> Client | SseClient:
    """A subscriber of any flavor: a WebSocket client as ``connect`` opens it, or an SSE stream."""
    if flavor != "sse":
        return await connect(host, port, channel, flavor, on_payload)
    rooms = [channel] if isinstance(channel, str) else channel
    loop = asyncio.get_running_loop()
    names = [TUTORIAL + room for room in rooms]
    _, sse = await loop.create_connection(lambda: SseClient(f"{host}:{port}", names, on_payload), host, port)
    await asyncio.wait_for(sse.ready, 30)
    return sse
