"""How a ``CentrifugeClient`` (app/protocols/centrifuge.py) talks to its client: commands in,
frames out, a close with a code. One client logic, several transports.

* ``WebSocketTransport``: ``/connection/websocket``, each frame a batch of commands (text in
  JSON, binary in Protobuf).
* ``StreamTransport``: Centrifugo's bidirectional emulation (``/connection/http_stream``,
  ``/connection/sse``): the replies and pushes go down one streaming HTTP response (the
  Connection's ``StreamWire`` frames them), the commands come up in separate ``POST /emulation``
  requests, on this process or another (app/protocols/emulation.py), into a bounded inbox.

Sending goes through the Connection either way (its queue, slow-consumer bound and wire format),
so a command that replies through ``session.conn`` (``subscribe``) needs no transport of its own.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Any, Protocol

from app import metrics
from app.connection import Connection
from app.protocol import Outgoing

# Bytes of randomness in a session id: it is the only credential an emulation POST carries.
SESSION_BYTES = 24


class Transport(Protocol):
    def receive(self) -> Awaitable[str | bytes | None]:
        """The next batch of commands (JSON lines, or length-delimited Protobuf), or None once
        the client is gone."""
        ...

    def send(self, out: Outgoing) -> None: ...

    def close(self, code: int, reason: str | None = None) -> None: ...

    def connect_fields(self) -> dict[str, Any]:
        """What the connect reply carries for this transport (emulation: ``session``, ``node``)."""
        ...


class WebSocketTransport:
    __slots__ = ("binary", "conn")

    def __init__(self, conn: Connection, *, binary: bool = False) -> None:
        self.conn = conn
        self.binary = binary

    def receive(self) -> Awaitable[str | bytes | None]:
        # The Connection's coroutine itself, not one more frame around it for every idle socket.
        return self.conn.receive_frame(binary=self.binary)

    def send(self, out: Outgoing) -> None:
        self.conn.offer(out)

    def close(self, code: int, reason: str | None = None) -> None:
        self.conn.close(code, reason)

    def connect_fields(self) -> dict[str, Any]:
        return {}


class StreamTransport:
    """An emulated connection: its session id (unguessable, this connection's only) and inbox.

    ``hand`` is how an emulation request delivers a batch; a full inbox refuses it (the POST is
    answered 429), so what waits per session is at most ``limit`` batches of
    ``SWITCHBOARD_MAX_MESSAGE_BYTES``. The size was checked by the POST; the rate limit is
    charged here, as ``Connection.receive_text`` charges a WebSocket frame.
    """

    __slots__ = ("_gone", "_inbox", "conn", "node", "session_id")

    def __init__(self, conn: Connection, node: str, limit: int) -> None:
        self.conn = conn
        self.node = node
        self.session_id = secrets.token_urlsafe(SESSION_BYTES)
        self._inbox: asyncio.Queue[str] = asyncio.Queue(limit)
        self._gone: asyncio.Future[None] | None = None

    def hand(self, text: str) -> bool:
        if self.conn.close_code is not None:
            return False
        try:
            self._inbox.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def receive(self) -> str | None:
        if self._gone is None:  # the response's reading side: the peer's disconnect
            self._gone = asyncio.ensure_future(self.conn.wait_disconnect())
        while self.conn.close_code is None:
            get = asyncio.ensure_future(self._inbox.get())
            try:
                await asyncio.wait((get, self._gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not get.done():  # the peer went (or this task was cancelled): take nothing
                    get.cancel()
            if not get.done():
                return None
            text = get.result()
            metrics.received_counter(self.conn.endpoint).inc()
            if self.conn.allow():
                return text
            self.conn.on_limited(text)
        return None

    def send(self, out: Outgoing) -> None:
        self.conn.offer(out)

    def close(self, code: int, reason: str | None = None) -> None:
        self.conn.close(code, reason)

    def connect_fields(self) -> dict[str, Any]:
        return {"session": self.session_id, "node": self.node}

    def stop(self) -> None:
        if self._gone is not None:
            self._gone.cancel()
