"""The Hub: which local connections are in which channel, and the fan-out to them.

The first local member of a channel makes the process SUBSCRIBE; the last one leaving makes it
UNSUBSCRIBE. Both transitions run under a per-channel lock, and a failed subscribe leaves no
trace, so a channel is never half-joined. ``dispatch`` is the broker's ``on_message``: it is
synchronous and hands one shared, already-encoded message to each member's ``offer``, which
writes it at once or queues it, and never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection

from app import metrics
from app.broker import Broker, BrokerUnavailable
from app.connection import Connection
from app.protocol import Outgoing, pack, unpack

log = logging.getLogger("switchboard.hub")


class Hub:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._members: dict[str, dict[str, Connection]] = {}
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.connections: set[Connection] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def channels(self) -> Collection[str]:
        """The channels with local members: what to resubscribe after a broker reconnect."""
        return tuple(self._members)

    def members(self, channel: str) -> int:
        return len(self._members.get(channel, ()))

    def attach(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._idle.clear()

    async def wait_idle(self) -> None:
        """Return once no connection is attached (used by the drain)."""
        await self._idle.wait()

    async def join(self, conn: Connection, channel: str) -> None:
        """Raises BrokerUnavailable if the channel cannot be subscribed; nothing is changed then."""
        members = self._members.get(channel)
        if members is None:
            async with self._channel_lock(channel):
                members = self._members.get(channel)
                if members is None:
                    await self.broker.subscribe(channel)
                    members = self._members[channel] = {}
                    metrics.CHANNELS.inc()
        members[conn.id] = conn
        conn.channels.add(channel)

    async def leave(self, conn: Connection, channel: str) -> None:
        conn.channels.discard(channel)
        members = self._members.get(channel)
        if members is None or members.pop(conn.id, None) is None or members:
            return
        async with self._channel_lock(channel):
            # A join may have slipped in while we waited for the lock.
            if self._members.get(channel) is members and not members:
                del self._members[channel]
                metrics.CHANNELS.dec()
                with contextlib.suppress(BrokerUnavailable):
                    await self.broker.unsubscribe(channel)

    async def drop(self, conn: Connection) -> None:
        """Leave every channel: called once when a connection ends."""
        self.connections.discard(conn)
        for channel in tuple(conn.channels):
            await self.leave(conn, channel)
        if not self.connections:
            self._idle.set()

    async def publish(self, channel: str, frame: bytes, exclude: Connection | None = None) -> None:
        """Send ``frame`` to every member of ``channel`` on every instance, except ``exclude``."""
        try:
            await self.broker.publish(channel, pack(frame, exclude.id if exclude else None))
        except BrokerUnavailable:
            metrics.PUBLISH_FAILURES.inc()
            raise

    def dispatch(self, channel: str, envelope: bytes) -> None:
        members = self._members.get(channel)
        if not members:
            return
        started = time.perf_counter()
        try:
            env = unpack(envelope)
        except ValueError:
            metrics.LISTENER_ERRORS.inc()
            log.warning("dropped a malformed envelope on a channel")
            return
        out = Outgoing(env.frame)  # its wire frame is built once, on first use, for every member
        exclude = env.exclude
        delivered = 0
        for conn_id, conn in members.items():
            if conn_id != exclude and conn.offer(out):
                delivered += 1
        finished = time.perf_counter()
        metrics.HOT_BROADCASTS.inc()
        metrics.HOT_DELIVERED.inc(delivered)
        metrics.HOT_FANOUT.observe(finished - started)
        metrics.HOT_PUBLISH_TO_DELIVERY.observe(max(0.0, time.time() - env.published_at))

    @contextlib.asynccontextmanager
    async def _channel_lock(self, channel: str) -> AsyncIterator[None]:
        # Locks exist only while someone holds or waits for them, so idle channels cost nothing.
        entry = self._locks.get(channel)
        if entry is None:
            entry = self._locks[channel] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[channel]
