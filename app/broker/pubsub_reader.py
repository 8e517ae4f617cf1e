"""The pub/sub connection's reader: RESP parsed by hiredis straight off the transport.

redis-py's ``PubSub.get_message`` costs a coroutine resumption, a timeout scope and a dict per
message, in every instance, for every message: with many small rooms that fixed cost was about
12 us of the listener's time per message (docs/benchmarks.md has the profile). Here redis-py still
opens the connection (TLS, AUTH, Sentinel's master discovery, CLIENT SETNAME), then its transport
is handed to this protocol. Each chunk the socket delivers is fed to a hiredis Reader, and every
complete reply goes to ``on_reply`` synchronously, in order, inside the same callback: no task
switch per message and no per-message allocation beyond the reply itself.

Guarantees: replies are handed over in the order Redis sent them; a reply ``on_reply`` raises on
is logged and counted, never stops the reader; a protocol error or a lost connection resolves
``lost`` (with the error), after which nothing more is handed over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection

from app import metrics

log = logging.getLogger("switchboard.broker")

OnReply = Callable[[Any], None]

PROBE_INTERVAL = 2.0
# No message at all (not even our own probe) for this long means a dead or half-open connection.
PROBE_DEADLINE = 3 * PROBE_INTERVAL


def pack(*args: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class PubSubReader(asyncio.Protocol):
    def __init__(self, on_reply: OnReply) -> None:
        self._parser = hiredis.Reader()
        self._on_reply = on_reply
        self._transport: asyncio.Transport | None = None
        self._owners: tuple[object, ...] = ()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_seen = time.monotonic()

    @classmethod
    def take_over(cls, connection: AbstractConnection, on_reply: OnReply) -> PubSubReader:
        """Read ``connection`` (connected by redis-py, nothing sent on it since) from now on.

        redis-py has read every reply to what it sent while connecting, so no bytes of ours are
        left in its buffers. It must not use the connection again.
        """
        writer: asyncio.StreamWriter | None = connection._writer
        if writer is None:
            raise ConnectionError("redis connection is not open")
        reader = cls(on_reply)
        transport: Any = writer.transport
        transport.set_protocol(reader)
        reader._transport = transport
        # Held, not used: once collected, redis-py's connection (and asyncio's stream writer)
        # would close the transport under us.
        reader._owners = (connection, writer)
        return reader

    def send(self, *args: str | bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("redis pub/sub connection closed")
        self._transport.write(pack(*args))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def watch(self, probe: Callable[[], Awaitable[object]], *, probe_now: bool) -> None:
        """Until the connection is lost (raises why): messages arrive through ``on_reply``; this
        only publishes a probe, which comes back on this connection, every PROBE_INTERVAL (the
        first at once if ``probe_now``), and raises if nothing at all arrived for PROBE_DEADLINE:
        a half-open connection that a read alone would wait on for ever."""
        next_probe = time.monotonic() + (0.0 if probe_now else PROBE_INTERVAL)
        while True:
            done, _ = await asyncio.wait([self.lost], timeout=PROBE_INTERVAL / 2)
            if done:
                self.lost.result()  # raises why
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + PROBE_INTERVAL
                await asyncio.wait_for(probe(), PROBE_INTERVAL)
            if now - self.last_seen > PROBE_DEADLINE:
                raise ConnectionError("pub/sub connection silent; probe not received")

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        parser = self._parser
        parser.feed(data)
        try:
            while (reply := parser.gets()) is not False:
                try:
                    self._on_reply(reply)
                except Exception:  # one bad reply must not stop delivery of the rest
                    metrics.LISTENER_ERRORS.inc()
                    log.exception("pub/sub reply handling failed")
        except hiredis.ProtocolError as exc:
            self._lose(ConnectionError(f"redis protocol error: {exc}"))

    def eof_received(self) -> bool:
        self._lose(ConnectionError("redis closed the pub/sub connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(ConnectionError(f"redis pub/sub connection lost: {exc}" if exc else "redis pub/sub connection lost"))

    def _lose(self, error: ConnectionError) -> None:
        if not self.lost.done():
            self.lost.set_exception(error)
            self.lost.exception()  # retrieved: the listener may be between reads, not awaiting it
        self._on_reply = _ignore
        if self._transport is not None:
            self._transport.close()


def _ignore(reply: Any) -> None:
    pass
