"""How Switchboard is served: uvicorn options, a draining Server, and the gunicorn worker.

``python -m app`` and gunicorn (``-k app.server.Worker``) share ``server_options`` so that a
single instance and a production worker behave the same.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn_worker import UvicornWorker

from app import admission, drain
from app.config import Settings
from app.launch import load_settings
from app.protocol import FAST_WRITE
from app.streams.chunks import ChunkWriter
from app.timers import timers

# A request's head before it is complete: the target, and the header fields (count and bytes).
MAX_URL = 8192
MAX_HEADERS = 128
MAX_HEAD = 16384
# Bytes a socket may owe its peer in control replies (pongs) before it counts as a slow consumer.
# Data frames are bounded before the transport (Connection's queue); pongs are written by uvicorn.
MAX_WRITE_BUFFER = 1 << 20


class _EventQueue:
    """What uvicorn's protocol needs of its per-socket asyncio.Queue: put_nowait, get, empty.

    One consumer (the app's receive) and no join(): a list read from a moving head, and a single
    waiter, instead of a Queue with two waiter deques and an Event (about 2 KB a socket). A list,
    not a deque: an empty deque is 760 bytes. The head index keeps reads O(1) when one chunk from
    the peer held thousands of frames; the list is emptied whenever it has been read to the end.
    """

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while self._head >= len(self._items):
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        item = self._items[self._head]
        self._head += 1
        if self._head == len(self._items):
            self._items.clear()
            self._head = 0
        return item

    def empty(self) -> bool:
        return self._head >= len(self._items)


class _Writable:
    """What uvicorn's protocol and our writers need of its per-socket ``writable`` asyncio.Event.

    asyncio.Event keeps a deque of waiters (760 bytes, even when empty) for a socket that is almost
    always writable. Here waiters share one future, made only when the socket backs up; each waits
    on it through ``shield``, so one waiter's timeout does not cancel it for the others.
    """

    __slots__ = ("_future", "_set")

    def __init__(self) -> None:
        self._set = True
        self._future: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._future)


class _ProtocolLogger(logging.Logger):
    """uvicorn's WebSocket protocol logger, minus one flood: it logs a client's invalid UTF-8 as an
    error with a traceback. Here it is a one-line warning (the socket is closed 1007 right after,
    so once per connection), and every occurrence is counted. Otherwise it is ``uvicorn.error``:
    same level, same handlers (it propagates to them)."""

    def __init__(self) -> None:
        super().__init__("uvicorn.error.websockets")
        self.parent = logging.getLogger("uvicorn.error")

    @property
    def level(self) -> int:  # uvicorn reads it to decide whether to trace
        return self.parent.level if self.parent is not None else logging.NOTSET

    @level.setter
    def level(self, value: int) -> None:
        pass  # always the parent's

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        from app import metrics  # not at import: gunicorn's master imports this module first

        metrics.PROTOCOL_ERRORS.labels("client_frame").inc()
        self.warning("%s Closed with 1007.", msg)


PROTOCOL_LOG = _ProtocolLogger()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with bounds on a request that has not finished its head.

    uvicorn keeps a connection that never completes its request line and headers for ever, and
    buffers what it sends: silent or one-byte-a-second clients (slowloris) and endless headers
    would hold sockets and memory. Here the head must arrive within ``handshake_timeout`` (else
    the connection is closed), and may hold at most ``MAX_URL`` bytes of request target (else
    414) and ``MAX_HEADERS`` headers of ``MAX_HEAD`` bytes in all (else 431).
    """

    handshake_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = self.loop.call_later(self.handshake_timeout, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._deadline is None:  # the next request on a kept-alive connection
            self._deadline = self.loop.call_later(self.handshake_timeout, self._too_slow)

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_URL:
            self._refuse(414, "URI Too Long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD or len(self.headers) >= MAX_HEADERS:
            self._refuse(431, "Request Header Fields Too Large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_deadline()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # an HTTP request, not an upgrade
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[FAST_WRITE] = ChunkWriter(cycle)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # our own refusal already answered
            super().send_400_response(msg)

    def _refuse(self, status: int, phrase: str) -> None:
        """Answer and close; raising stops the parser (uvicorn then skips its own 400)."""
        self._refused = True
        body = f"{phrase}\n".encode()
        head = f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
        self.transport.write(head.encode() + b"connection: close\r\n\r\n" + body)
        self.transport.close()
        raise ValueError(phrase)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol (the fastest here), plus a fast path and one fix.

    Fast path: the protocol puts itself in the ASGI scope under FAST_WRITE, offering
    ``try_write(frames)`` and ``wait_writable()``. A broadcast builds its WebSocket frame once and
    writes the same bytes to every socket, with no coroutine, task switch or per-socket framing
    (``app.connection``); the ASGI path stays for close frames and for other servers.

    Fix: after an ASGI denial response (the HTTP 503 a draining instance answers handshakes
    with), uvicorn 0.54 never marks the handshake finished and logs a false "returned without
    completing handshake" error for every refused client. Also quiets a per-socket log line.
    """

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The app task is created but has not run yet: it will see the extension.
        if getattr(self, "scope", None) is not None and not self.close_sent:
            extensions: dict[str, Any] = self.scope["extensions"]
            extensions[FAST_WRITE] = self

    def try_write(self, frames: bytes) -> bool:
        """Write complete data frames now, unless the socket is closing or backed up."""
        if self.close_sent or not self.writable.is_set() or self.transport.is_closing():
            return False
        self.transport.write(frames)
        return True

    async def wait_writable(self) -> None:
        await self.writable.wait()

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all: for a peer that stopped reading."""
        self.transport.abort()

    def schedule_ping(self) -> None:
        """uvicorn's keepalive ping, on the process's timer heap (app/timers.py) rather than an
        event-loop timer of its own per socket."""
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_timer = timers().call_later(delay, self.send_keepalive_ping)  # type: ignore[assignment]

    def send_keepalive_ping(self) -> None:
        super().send_keepalive_ping()
        if self.pong_timer is not None:  # the pong's deadline, which uvicorn put on the loop: moved
            self.pong_timer.cancel()
            assert self.ping_timeout is not None
            self.pong_timer = timers().call_later(self.ping_timeout, self.keepalive_timeout)  # type: ignore[assignment]

    def handle_ping(self) -> None:
        """Pongs count against the write bound too: a peer that pings without reading is a slow
        consumer, not a way to make this process buffer without limit."""
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            from app import metrics  # not at import: gunicorn's master imports this module first

            metrics.SLOW_CONSUMERS.inc()
            self.transport.abort()
            return
        super().handle_ping()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _EventQueue()  # type: ignore[assignment]
        self.writable = _Writable()  # type: ignore[assignment]
        # uvicorn hands the websockets state machine its own logger, which then prints
        # "connection open" per socket at INFO; uvicorn already logs each handshake.
        self.conn.logger = logging.getLogger("websockets.server")
        self.logger = PROTOCOL_LOG

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # uvicorn never reads the handshake request and response again; they cost ~3 KB a socket.
            # The websockets parser's generator frame keeps its own reference to the request for
            # the connection's life, so its headers (about 1.7 KB) are emptied, not just dropped.
            if self.request is not None:
                self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
        elif message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


def server_options(settings: Settings) -> dict[str, Any]:
    http = type("HttpProtocol", (HttpProtocol,), {"handshake_timeout": settings.handshake_timeout})
    return {
        "loop": "uvloop",
        "http": http,
        "ws": WebSocketProtocol,
        # The protocol layer enforces the size limit with 1009 before the app sees the frame.
        "ws_max_size": settings.max_message_bytes,
        # Deflate runs per socket: it would undo encode-once fan-out.
        "ws_per_message_deflate": False,
        # After the drain, stragglers get this long before uvicorn cancels them.
        "timeout_graceful_shutdown": 5,
    }


class DrainingServer(uvicorn.Server):
    """On SIGTERM, drain WebSockets in paced batches before uvicorn's all-at-once shutdown."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        drain.begin_all()  # now, not at the main loop's next tick

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await drain.drain_all()
        await super().shutdown(sockets)


class Worker(UvicornWorker):
    """gunicorn worker: uvicorn with Switchboard's options and the draining shutdown.

    gunicorn's master imports this class before it runs gunicorn.conf.py's hooks: nothing this
    module imports may touch app.metrics (the multiprocess directory does not exist yet).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.CONFIG_KWARGS = server_options(load_settings(check_broker=False))  # the master checked it
        super().__init__(*args, **kwargs)
        # The instance's handshake rate is divided among its workers (app/admission.py). This is
        # gunicorn's configured count (-w, WEB_CONCURRENCY); TTIN/TTOU changes are not followed.
        admission.set_workers(self.cfg.workers)

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(3)  # gunicorn's WORKER_BOOT_ERROR: the arbiter stops instead of respawning.
