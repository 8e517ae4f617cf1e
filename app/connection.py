"""One WebSocket: a fast synchronous write path, a bounded backlog queue, limits, heartbeat.

Everything sent to a socket goes through ``offer`` (broadcasts and direct replies alike). The Hub
calls it synchronously for each member and never waits on a slow client:

* Fast path: nothing is queued and the socket takes data (our uvicorn protocol offers FAST_WRITE):
  the message's pre-built frame is written to the transport at once. No task switch, no
  coroutine, no per-socket framing: the same bytes go to every member.
* Backlog: otherwise the message is queued, and a writer task (created on first need) waits until
  the socket drains, then writes every queued frame in ONE transport write (coalescing: many
  frames, one syscall; never several messages in one frame). A full queue means a slow consumer.

Without FAST_WRITE (another ASGI server) the writer sends ASGI messages one by one. Close frames
always take the ASGI path, so the server knows the socket is closing.

A one-way stream (app/streams/) is a Connection too, with a ``StreamWire``: each message is encoded by
the wire (an SSE event, an NDJSON line, with the stream's cursor) instead of as a WebSocket frame,
and our HTTP protocol's FAST_WRITE writes it as an HTTP/1.1 chunk. Queue, bounds, abort, drain and
metrics are the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.websockets import WebSocket

from app import metrics
from app.budgets import TokenBucket
from app.config import Settings
from app.errors import CLOSE_REASONS, PROTOBUF_TEXT_FRAME, CloseCode, error_frame, reason_for
from app.errors import RATE_LIMITED as RATE_LIMITED_REASON
from app.protocol import FAST_WRITE, BadFrame, Outgoing, parse_object

log = logging.getLogger("switchboard.connection")

KNOWN_CODES = frozenset(int(code) for code in CloseCode)
# How long a closing connection may take to flush its close frame before we stop waiting.
CLOSE_FLUSH_TIMEOUT = 5.0
PING = Outgoing(b'{"type":"ping"}')


class FastWriter(Protocol):
    def try_write(self, frames: bytes) -> bool: ...

    async def wait_writable(self) -> None: ...

    def abort(self) -> None: ...


class ConnectionGone(Exception):
    """The connection closed while a paced sender waited for it to drain: stop sending to it."""


class Close:
    """A queued close: sent after the frames before it, through ASGI."""

    __slots__ = ("message",)

    def __init__(self, code: int, reason: str, message: dict[str, Any] | None = None) -> None:
        self.message = message or {"type": "websocket.close", "code": code, "reason": reason}


class StreamWire(Protocol):
    """How a streaming HTTP response (app/streams/) writes what a WebSocket sends as frames.

    ``encode`` is called once per message offered to this connection, in order, at offer time:
    the bytes may carry the connection's own resume cursor, which moves with each message.
    """

    def encode(self, out: Outgoing) -> bytes: ...

    def close_body(self, code: int, reason: str) -> bytes: ...


class Chunk:
    """One queued piece of a streaming response, already in its wire format."""

    __slots__ = ("frame",)

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    @property
    def message(self) -> dict[str, Any]:
        return _body(self.frame)


def _body(data: bytes, *, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def origin_allowed(websocket: WebSocket | Request, allowed: list[str]) -> bool:
    # The raw header list, read once: Starlette's Headers would decode every header per lookup.
    origin: str | None = None
    host: str | None = None
    for name, value in websocket.scope["headers"]:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    if origin is None or "*" in allowed or origin in allowed:
        return True  # No Origin: not a browser, so Origin checks protect nothing there.
    # Same-origin pages (the demo at GET /) are always allowed.
    return urlsplit(origin).netloc == host


class Connection:
    # Slots: one of these per open socket, and a dict of this many attributes is about 1 KB.
    __slots__ = (
        "_aborted",
        "_base_limit",
        "_burst",
        "_closing",
        "_emptied",
        "_fast",
        "_heartbeat",
        "_held",
        "_history",
        "_last_refill",
        "_max_bytes",
        "_peer_gone",
        "_pong",
        "_queue",
        "_queue_limit",
        "_rate",
        "_receive",
        "_received",
        "_send",
        "_settings",
        "_strikes",
        "_task",
        "_tokens",
        "_wakeup",
        "_wire",
        "_write_timeout",
        "_writer",
        "channels",
        "close_code",
        "endpoint",
        "id",
        "on_limited",
        "websocket",
        "wire_codes",
    )

    def __init__(
        self, websocket: WebSocket | Request, endpoint: str, settings: Settings, wire: StreamWire | None = None
    ) -> None:
        self.id = secrets.token_hex(8)
        # None: a WebSocket. Otherwise a streaming HTTP response in that wire format.
        self._wire = wire
        self.endpoint = endpoint
        self.websocket = websocket  # the Request, for a stream
        self.channels: set[str] = set()
        self.close_code: int | None = None
        # How a frame dropped by the rate limiter is answered; the default is an error frame.
        self.on_limited: Callable[[str | bytes], None] = self._tell_limited
        # Close codes as this endpoint's protocol names them (Centrifugo's); None: as CloseCode.
        # ``close_code`` (and the disconnect metric) keep Switchboard's own code.
        self.wire_codes: dict[int, int] | None = None
        self._send = websocket._send
        self._receive = websocket._receive
        self._fast: FastWriter | None = websocket.scope.get("extensions", {}).get(FAST_WRITE)
        # A list, not a deque: an empty deque is 760 bytes, and most sockets never queue a frame.
        self._queue: list[Outgoing | Chunk | Close] = []
        self._queue_limit = self._base_limit = settings.send_queue_size
        # Created on first need: most sockets never queue a frame or run a heartbeat.
        self._wakeup: asyncio.Event | None = None
        self._emptied: asyncio.Future[None] | None = None  # drained(): resolved once the queue empties
        self._closing = False
        # hold(): frames queue but are not written until release() (a connect reply that must
        # precede the pushes of the channels joined for it).
        self._held = False
        self._aborted = False
        self._peer_gone = False
        self._task: asyncio.Task[Any] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._pong: asyncio.Event | None = None
        self._max_bytes = settings.max_message_bytes
        self._write_timeout = settings.write_timeout
        self._rate = settings.rate_limit_per_second
        self._burst = float(settings.rate_limit_burst)
        self._tokens = self._burst
        self._strikes = 0
        self._last_refill = 0.0
        self._received = metrics.received_counter(endpoint)
        self._settings = settings
        self._history: TokenBucket | None = None  # made on the first history read

    # -- sending ----------------------------------------------------------------------------------

    def offer(self, out: Outgoing) -> bool:
        """Send now or queue, never waiting. A full queue disconnects this (slow) consumer."""
        if self._closing:
            return False
        queue = self._queue
        wire = self._wire
        frame = out.frame if wire is None else wire.encode(out)
        if not queue and not self._held and self._fast is not None and self._fast.try_write(frame):
            return True
        depth = len(queue)
        if depth >= self._queue_limit:
            self.abort(CloseCode.SLOW_CONSUMER)
            metrics.SLOW_CONSUMERS.inc()
            return False
        queue.append(out if wire is None else Chunk(frame))
        if depth:
            metrics.HOT_QUEUE_DEPTH.observe(depth + 1)
        self._wake_writer()
        return True

    def hold(self) -> None:
        """Queue every frame from now on without writing it, until ``release``."""
        self._held = True

    def release(self, first: Outgoing) -> None:
        """End ``hold`` (if held): ``first`` is written before every frame queued meanwhile.

        Centrifugo's connect reply names the channels the server joined for it, whose pushes may
        already be queued: the SDKs drop a push of a channel they do not know yet."""
        self._held = False
        if self._closing:
            return
        if not self._queue:  # nothing held back: as any frame, written now if the socket takes it
            self.offer(first)
            return
        self._queue.insert(0, first if self._wire is None else Chunk(self._wire.encode(first)))
        self._wake_writer()

    def make_room(self, count: int) -> None:
        """Let the next ``count`` frames queue beyond the limit, until the queue next drains.

        For a recovery: it is bounded by the history size, not by how fast this client reads, and
        cutting the client off halfway would only make it start over.
        """
        self._queue_limit = max(self._queue_limit, len(self._queue) + count + self._base_limit)

    def send_text(self, text: str | bytes) -> None:
        self.offer(Outgoing(text.encode() if isinstance(text, str) else text))

    def send_json(self, payload: dict[str, Any]) -> None:
        self.offer(Outgoing(orjson.dumps(payload)))

    def send_error(self, message: str) -> None:
        self.offer(Outgoing(error_frame(message)))

    def close(self, code: int, reason: str | None = None) -> None:
        """Close after the frames already queued: an error frame reaches the client first."""
        if self._closing:
            return
        self._closing = True
        self._held = False  # the close, and what was queued before it, go out
        self.close_code = int(code)
        text = reason or CLOSE_REASONS.get(code, "")  # type: ignore[call-overload]
        # RFC 6455: a close reason fits in 123 bytes of UTF-8 (the server API's may not).
        text = text.encode()[:123].decode(errors="ignore")
        wire = self._wire
        ending = None if wire is None else _body(wire.close_body(int(code), text), more=False)
        self._queue.append(Close(self._wire_code(code), text, ending))
        self._wake_writer()

    def _wire_code(self, code: int) -> int:
        codes = self.wire_codes
        return int(code) if codes is None else codes.get(int(code), int(code))

    def abort(self, code: CloseCode) -> None:
        """Close now, dropping queued frames: used when the client cannot keep up."""
        if self._closing:
            return
        self._closing = self._aborted = True
        self.close_code = int(code)
        self._queue.clear()
        self._resolve_emptied()
        if self._writer is not None:
            self._writer.cancel()
        # The handler stops at its next await; if it is the caller (drained()), it is told instead.
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _wake_writer(self) -> None:
        if self._writer is None:
            self._wakeup = asyncio.Event()
            self._writer = asyncio.create_task(self._write_loop())
        else:
            assert self._wakeup is not None
            self._wakeup.set()

    async def _write_loop(self) -> None:
        queue, fast, wakeup = self._queue, self._fast, self._wakeup
        assert wakeup is not None
        try:
            while True:
                if not queue or self._held:
                    if not queue:
                        self._queue_limit = self._base_limit
                        self._resolve_emptied()
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                if isinstance(queue[0], Close) or fast is None:
                    head = queue.pop(0)
                    await self._send(head.message)
                    if isinstance(head, Close):
                        return
                    del head  # not kept (nor its payload) while the writer waits for more
                    continue
                try:
                    # A socket that has not drained in WRITE_TIMEOUT is stalled: its peer is gone
                    # or has stopped reading. Abort it rather than hold its backlog forever.
                    await asyncio.wait_for(fast.wait_writable(), self._write_timeout)
                except TimeoutError:
                    self._stalled(fast)
                    return
                count = 0
                while count < len(queue) and not isinstance(queue[count], Close):
                    count += 1
                frames = b"".join(out.frame for out in queue[:count])  # type: ignore[union-attr]
                del queue[:count]
                if not fast.try_write(frames):
                    if self._wire is None:
                        raise ConnectionError("socket closed while frames were queued")
                    # A stream's writer declines once its peer is gone or its response is
                    # complete; uvicorn's send knows which, and drops what it cannot write.
                    await self._send(_body(frames))
                del frames  # as head: an idle writer holds no frame
        except asyncio.CancelledError:
            raise
        except Exception:
            # The client went away mid-send; the receive side sees the disconnect and ends.
            self._closing = self._peer_gone = True
            queue.clear()
            self._resolve_emptied()

    def _stalled(self, fast: FastWriter) -> None:
        metrics.SLOW_CONSUMERS.inc()
        fast.abort()  # the transport and its unsent bytes: nothing more will drain
        self.abort(CloseCode.SLOW_CONSUMER)

    def _resolve_emptied(self) -> None:
        if self._emptied is not None:
            if not self._emptied.done():
                self._emptied.set_result(None)
            self._emptied = None

    async def drained(self) -> None:
        """Wait until every queued frame is written and the socket takes more.

        A paced sender (a replay, page by page) waits here between pages, so it holds at most one
        page per client; a socket that does not drain within WRITE_TIMEOUT is aborted as a slow
        consumer. Raises ConnectionGone once the connection is closing.
        """
        if self._queue and not self._closing and not self._held:  # held: nothing drains until released
            if self._emptied is None:
                self._emptied = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._emptied)  # the writer itself aborts a stalled socket
        fast = self._fast
        if fast is not None and not self._closing:
            try:
                await asyncio.wait_for(fast.wait_writable(), self._write_timeout)
            except TimeoutError:
                self._stalled(fast)
        if self._closing:
            raise ConnectionGone

    # -- the history budget -----------------------------------------------------------------------

    def history_budget(self) -> TokenBucket:
        """This connection's history bytes (``history`` replies and replays): app/budgets.py."""
        if self._history is None:
            s = self._settings
            self._history = TokenBucket(s.history_bytes_per_second, s.history_bytes_burst, time.monotonic())
        return self._history

    async def history_turn(self) -> None:
        """A replay's next page waits here until the budget is no longer spent (or in debt)."""
        delay = self.history_budget().delay(time.monotonic())
        if delay > 0:
            metrics.HISTORY_PACED.inc()
            await asyncio.sleep(delay)

    def spend_history(self, size: int) -> None:
        self.history_budget().spend(size, time.monotonic())

    # -- receiving --------------------------------------------------------------------------------

    async def receive_text(self) -> str | None:
        """The next text frame within the size and rate limits, or None once the socket is done."""
        frame = await self.receive_frame(binary=False)
        assert not isinstance(frame, bytes)
        return frame

    async def receive_frame(self, *, binary: bool) -> str | bytes | None:
        """The next frame of the protocol's kind: text, or binary (Centrifugo's Protobuf, which
        closes a text frame with PROTOBUF_TEXT_FRAME); else as ``receive_text``."""
        while not self._closing:
            if self._queue:
                # Replies are waiting: let the writer flush them before taking the next frame.
                # A burst of client frames is otherwise handled in one tick, the writer never
                # runs, and a client that reads fine is cut off as a slow consumer.
                await asyncio.sleep(0)
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self._closing = self._peer_gone = True
                if self.close_code is None:
                    self.close_code = message.get("code", 1005)
                return None
            frame: str | bytes | None = message.get("bytes" if binary else "text")
            if frame is None:
                self.close(CloseCode.UNSUPPORTED_DATA, PROTOBUF_TEXT_FRAME if binary else None)
                return None
            if len(frame) > self._max_bytes or (
                isinstance(frame, str) and 4 * len(frame) > self._max_bytes and len(frame.encode()) > self._max_bytes
            ):
                self.close(CloseCode.MESSAGE_TOO_BIG)
                return None
            self._received.inc()
            if self._allow():
                return frame
            self.on_limited(frame)
        return None

    async def receive_object(self) -> dict[str, Any] | None:
        """The next JSON-object frame; invalid ones are answered with an error frame and skipped."""
        while (text := await self.receive_text()) is not None:
            try:
                return parse_object(text)
            except BadFrame as exc:
                self.send_error(str(exc))
        return None

    async def wait_disconnect(self) -> None:
        """A stream's reading side: return once the peer has gone, or the response is complete
        (uvicorn then reports a disconnect too). The request body, if any, is discarded."""
        while (await self._receive())["type"] not in ("http.disconnect", "websocket.disconnect"):
            pass
        if not self._closing:
            self._closing = self._peer_gone = True
            self._queue.clear()
            self._resolve_emptied()
            if self.close_code is None:
                self.close_code = 1005  # as a WebSocket that vanished without a close frame

    def _tell_limited(self, text: str | bytes) -> None:
        """Tell the client this frame was dropped by the rate limiter (``/ws`` answers its own way)."""
        if not self._closing:
            self.send_error(RATE_LIMITED_REASON)

    def allow(self) -> bool:
        """Charge one more message to the rate limit: a protocol that carries several commands
        in one frame (Centrifugo's) charges each after the first, so batching buys nothing."""
        return self._allow()

    def _allow(self) -> bool:
        """Token bucket. Over the limit: ``limited`` per dropped message, then 1008."""
        now = asyncio.get_running_loop().time()
        self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self._rate)
        self._last_refill = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._strikes = 0
            return True
        metrics.RATE_LIMITED.inc()
        self._strikes += 1
        if self._strikes > self._burst:
            self.close(CloseCode.POLICY_VIOLATION, RATE_LIMITED_REASON)
        return False

    # -- heartbeat --------------------------------------------------------------------------------

    def start_heartbeat(self, interval: float, timeout: float) -> None:
        self._pong = asyncio.Event()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(self._pong, interval, timeout))

    def pong(self) -> None:
        if self._pong is not None:
            self._pong.set()

    async def _heartbeat_loop(self, pong: asyncio.Event, interval: float, timeout: float) -> None:
        while not self._closing:
            await asyncio.sleep(interval)
            pong.clear()
            self.offer(PING)
            try:
                await asyncio.wait_for(pong.wait(), timeout)
            except TimeoutError:
                self.close(CloseCode.HEARTBEAT_TIMEOUT)
                return

    # -- lifecycle --------------------------------------------------------------------------------

    async def serve(self, handler: Awaitable[None]) -> None:
        """Run the endpoint's handler; always leaves the socket closed and the tasks stopped."""
        task = self._task = asyncio.current_task()
        assert task is not None
        self._last_refill = asyncio.get_running_loop().time()
        gauge = metrics.CONNECTIONS.labels(self.endpoint)
        gauge.inc()
        try:
            await handler
        except asyncio.CancelledError:
            # Our own abort() cancels the handler; anything else cancelling us must propagate.
            if not self._aborted or task.cancelling() > 1:
                raise
            task.uncancel()
        except ConnectionGone:
            pass  # the socket closed while the handler waited for it to drain: nothing to say
        except Exception:
            log.exception("handler for %s failed", self.endpoint)
            self.close(CloseCode.INTERNAL_ERROR)
        finally:
            gauge.dec()
            await self._finish()

    async def _finish(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if not self._closing:
            self.close(CloseCode.NORMAL)
        writer = self._writer
        if self._aborted and self._wire is not None and self._fast is not None:
            # A stream has no close frame to try: a reader that stopped would not read it. Drop
            # the connection and whatever it still buffers, now.
            self._fast.abort()
        elif self._aborted:
            # The writer was cancelled while the socket was stalled; try once to say why, bounded.
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                code = CloseCode(self.close_code or CloseCode.SLOW_CONSUMER)
                await asyncio.wait_for(
                    self._send({"type": "websocket.close", "code": self._wire_code(code), "reason": reason_for(code)}),
                    CLOSE_FLUSH_TIMEOUT,
                )
        elif not self._peer_gone and writer is not None:
            # Let the writer flush what is queued, ending with our close frame.
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), CLOSE_FLUSH_TIMEOUT)
        if writer is not None:
            writer.cancel()
        metrics.DISCONNECTS.labels(metrics.close_code_label(self.close_code or 1005, KNOWN_CODES)).inc()
