"""A lean ``GET /sse`` client for the benchmark: one asyncio Protocol per stream.

It reads the response's chunked body, splits it into events and hands each ``pub`` event's payload
``{"s": seq, "t": sent_at, ...}`` to ``on_payload``, as bench/wsclient.py does for WebSocket
frames. A stream cannot publish: the benchmark publishes to it from a ``/ws`` client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson


class SseClient(asyncio.Protocol):
    def __init__(self, host: str, rooms: list[str], on_payload: Callable[[int, float], None]) -> None:
        self.host, self.rooms, self.on_payload = host, rooms, on_payload
        self.transport: asyncio.Transport | None = None
        self.raw = bytearray()  # bytes off the socket, chunk framing and all
        self.body = bytearray()  # the event stream, chunk framing removed
        self.headers_done = False
        self.chunked = False
        self.pending = len(rooms)  # "subscribed" events still awaited
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        query = "&".join(f"channel={quote(room)}" for room in self.rooms)
        transport.write(f"GET /sse?{query} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"stream closed before it was ready: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        raw = self.raw
        raw += data
        if not self.headers_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(raw[:end]).lower()
            del raw[: end + 4]
            if not head.startswith((b"http/1.1 200", b"http/1.0 200")):
                self.ready.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                return
            self.headers_done = True
            self.chunked = b"transfer-encoding: chunked" in head
        if self.chunked:
            while True:
                line_end = raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(bytes(raw[:line_end]).split(b";", 1)[0], 16)
                if len(raw) < line_end + 2 + size + 2:
                    break
                self.body += raw[line_end + 2 : line_end + 2 + size]
                del raw[: line_end + 2 + size + 2]
        else:
            self.body += raw
            raw.clear()
        self.events()

    def events(self) -> None:
        body = self.body
        start = 0
        while (end := body.find(b"\n\n", start)) >= 0:
            for line in bytes(body[start:end]).split(b"\n"):
                if line.startswith(b"data: "):
                    self.on_event(orjson.loads(line[6:]))
            start = end + 2
        del body[:start]

    def on_event(self, event: dict[str, Any]) -> None:
        op = event.get("op")
        if op == "pub":
            data = event.get("data")
            if isinstance(data, dict) and isinstance(data.get("content"), dict):  # a /ws/global message
                data = data["content"]
            if isinstance(data, dict) and "s" in data:
                self.on_payload(data["s"], data["t"])
        elif op == "subscribed":
            self.pending -= 1
            if self.pending == 0 and not self.ready.done():
                self.ready.set_result(None)
        elif op in ("error", "close") and not self.ready.done():
            self.ready.set_exception(ConnectionError(f"stream refused: {event}"))

    def publish(self, channel: str, content: dict[str, Any]) -> None:
        raise TypeError("an SSE stream cannot publish")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
