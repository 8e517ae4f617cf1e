"""A reconnecting Switchboard client for Python services, tests and scripts.

    async with SwitchboardClient("ws://127.0.0.1:8000/ws/global/news") as client:
        await client.send({"content": "hello"})
        async for frame in client:
            print(frame)

* Reconnects with full-jitter exponential backoff, and stops on terminal close codes, where
  retrying cannot help: 1008 (auth or policy), 1003, and the server's own 4xxx codes but
  4000-4002 (4003: the server API's ``disconnect``; 4004: the user's connection limit).
* ``url`` may be a function (sync or async) called before every connect: rotate servers, or put a
  fresh token in.
* ``send`` while disconnected queues (bounded; the oldest message is dropped and counted beyond
  ``queue_limit``); the queue is flushed in order on the next connection. A message sent in the
  instant a connection dies, before the client has noticed, is lost: sends are at-most-once.
* Received frames wait in a bounded buffer; a consumer that stops reading stops the socket being
  read, so the server, not this process, decides when it is too slow.
* One client follows one channel endpoint (``/ws/chat``, ``/ws/room/{id}``, ``/ws/global/{ch}``).
  Frames that carry ``offset`` and ``epoch`` move ``position``; every reconnect passes it as
  ``since``/``epoch``, so the server sends what was missed, then ``{"type":"recovered",...}``
  (``ok:false`` when history could not cover the gap: resync from your own source of truth).
* ``token`` (a function, sync or async) switches to first-message auth: the client answers the
  server's ``auth_required`` with a fresh token, and the position travels in that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

# Close codes after which retrying with the same credentials cannot help, so the client stops:
# 1003 and 1008 (the server refused this client or its token), 4003 (the server API's
# `disconnect`, e.g. "account suspended") and 4004 (the user's connection limit). Every other 4xxx
# code is one the server API's `disconnect` chose, terminal too. Only 4000 (slow consumer), 4001
# (no pong) and 4002 (token expired: a token function gives a fresh one) are about this one
# connection, and a reconnect fixes them; 1000-class codes (1012 draining, 1013, 1011) do too.
TERMINAL_CODES = frozenset({1003, 1008, 4003, 4004})
TRANSIENT_SERVER_CODES = frozenset({4000, 4001, 4002})


def is_terminal(code: int | None) -> bool:
    """Whether a close with ``code`` ends the client instead of starting a reconnect."""
    if code is None:
        return False
    return code in TERMINAL_CODES or (4000 <= code <= 4999 and code not in TRANSIENT_SERVER_CODES)


_END = object()  # put in the receive buffer when the client stops
UrlSource = str | Callable[[], str | Awaitable[str]]


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)). Spreads a fleet of reconnects out."""
    delay: float = rng() * min(cap, base * 2 ** min(attempt, 30))
    return delay


def with_position(url: str, offset: int, epoch: str) -> str:
    """``url`` with its ``since``/``epoch`` query parameters set to this position."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in ("since", "epoch")]
    query += [("since", str(offset)), ("epoch", epoch)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class SwitchboardClient:
    def __init__(
        self,
        url: UrlSource,
        *,
        base_delay: float = 0.5,
        max_delay: float = 15.0,
        max_retries: int | None = None,
        queue_limit: int = 1000,
        buffer: int = 10_000,
        resume: bool = True,
        connect_options: dict[str, Any] | None = None,
        position: tuple[int, str] | None = None,
        token: Callable[[], str | Awaitable[str]] | None = None,
    ) -> None:
        self._url = url
        self.base_delay, self.max_delay, self.max_retries = base_delay, max_delay, max_retries
        self._outbox: deque[str] = deque()
        self._queue_limit = queue_limit
        self._frames: asyncio.Queue[Any] = asyncio.Queue(maxsize=buffer)
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self.connections = 0
        self.instance: str | None = None  # the server instance of the current connection
        self.dropped = 0
        self.close_codes: list[int | None] = []
        self.resume = resume
        # Passed to websockets' connect(): extra headers, ssl, local_addr...
        self.connect_options = connect_options or {}
        # (offset, epoch) of the last channel frame; pass a saved one to resume across restarts.
        self.position = position
        # First-message auth (``/ws/auth-first``, or ``?auth=first`` on a channel endpoint): called
        # before every connect; the position then travels in the auth message, not the URL.
        self.token = token
        self.connected = asyncio.Event()
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> SwitchboardClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="switchboard-client")

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._ws is not None:
            await self._ws.close()
        self._ended.set()

    async def send(self, message: Any) -> None:
        """Send now if connected; otherwise queue it for the next connection (bounded)."""
        text = message if isinstance(message, str) else json.dumps(message)
        if self._ws is not None and self.connected.is_set():
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(text)
                return
        self._outbox.append(text)
        if len(self._outbox) > self._queue_limit:
            self._outbox.popleft()
            self.dropped += 1

    async def receive(self, timeout: float | None = None) -> Any:
        """The next frame; raises TimeoutError, or EOFError once the client has stopped for good."""
        if self._frames.empty() and self._ended.is_set():
            raise EOFError("client stopped")
        async with asyncio.timeout(timeout):
            frame = await self._frames.get()
        if frame is _END:
            raise EOFError("client stopped")
        return frame

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.receive()
            except EOFError:
                return

    async def wait_until(self, predicate: Callable[[SwitchboardClient], bool]) -> None:
        """Wait for a state, e.g. ``lambda c: c.connections >= 2 and c.connected.is_set()``."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def terminal(self) -> bool:
        return bool(self.close_codes) and is_terminal(self.close_codes[-1])

    async def _resolve_url(self) -> str:
        if isinstance(self._url, str):
            url = self._url
        else:
            found = self._url()
            url = found if isinstance(found, str) else await found
        if self.resume and self.position is not None and self.token is None:
            url = with_position(url, *self.position)
        return url

    async def _authenticate(self, ws: ClientConnection) -> None:
        """Answer the server's ``auth_required`` with a fresh token (and the position to resume)."""
        assert self.token is not None
        await ws.recv()  # {"type":"auth_required"}
        found = self.token()
        auth: dict[str, Any] = {"type": "auth", "token": found if isinstance(found, str) else await found}
        if self.resume and self.position is not None:
            auth["since"], auth["epoch"] = self.position
        await ws.send(json.dumps(auth))

    async def _run(self) -> None:
        attempt = 0
        try:
            while self.max_retries is None or attempt <= self.max_retries:
                try:
                    async with connect(
                        await self._resolve_url(), open_timeout=10, close_timeout=2, **self.connect_options
                    ) as ws:
                        self._ws, attempt = ws, 0
                        if ws.response is not None:
                            self.instance = ws.response.headers.get("x-switchboard-instance")
                        self.connections += 1
                        if self.token is not None:
                            await self._authenticate(ws)
                        self.connected.set()
                        await self._notify()
                        while self._outbox:
                            await ws.send(self._outbox[0])
                            self._outbox.popleft()
                        async for raw in ws:
                            await self._deliver(raw)
                except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                    pass
                finally:
                    self.connected.clear()
                    await self._notify()
                rcvd = self._ws.protocol.close_rcvd if self._ws is not None else None
                self.close_codes.append(rcvd.code if rcvd is not None else None)
                self._ws = None
                if self.terminal:
                    return
                await asyncio.sleep(backoff_delay(attempt, self.base_delay, self.max_delay))
                attempt += 1
        finally:
            self._ended.set()
            # Wakes a reader blocked on an empty buffer; a full one is drained first, then ends.
            with contextlib.suppress(asyncio.QueueFull):
                self._frames.put_nowait(_END)

    async def _deliver(self, raw: str | bytes) -> None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            frame = raw
        if isinstance(frame, dict) and "offset" in frame and "epoch" in frame:
            self.position = (int(frame["offset"]), str(frame["epoch"]))
        await self._frames.put(frame)  # a full buffer stops reading: backpressure to the socket
