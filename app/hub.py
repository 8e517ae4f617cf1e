"""The Hub: which local connections are in which channel, and the fan-out to them.

The first local member of a channel makes the process SUBSCRIBE; the last one leaving makes it
UNSUBSCRIBE. Both transitions run under a per-channel lock, and a failed subscribe leaves no
trace, so a channel is never half-joined. ``dispatch`` is the broker's ``on_message``: it is
synchronous and hands one shared, already-encoded message to each member's ``offer``, which
writes it at once or queues it, and never waits.

With history on, every message carries its channel offset, and the Hub keeps the promise of no
gap and no duplicate (docs/delivery.md):

* each subscription remembers the last offset it was given and is never given it again;
* a gap in a channel's offsets (its pub/sub connection dropped) or a broker reconnect makes the
  Hub fetch the missing messages from history while it holds back the live ones (app/recovery.py);
* a client that resumes with ``since``/``epoch`` is fed its own missed messages before it joins
  the live stream (``join(..., resume=...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection

from app import metrics
from app.broker import Broker, BrokerUnavailable, Position
from app.broker.base import EPOCH_CHANGED
from app.connection import Connection
from app.protocol import Envelope, Outgoing, header, unpack
from app.recovery import HISTORY_OFF_FRAME, CatchUp, Channel, Subscription, recovered_frame

log = logging.getLogger("switchboard.hub")


class Hub:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.history = broker.history_options.enabled
        self._channels: dict[str, Channel] = {}
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.connections: set[Connection] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._catch_up = CatchUp(self)

    def channels(self) -> Collection[str]:
        """The channels with local members: what to resubscribe after a broker reconnect."""
        return tuple(self._channels)

    def channel(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def members(self, channel: str) -> int:
        ch = self._channels.get(channel)
        return len(ch.members) if ch is not None else 0

    def attach(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._idle.clear()

    async def wait_idle(self) -> None:
        """Return once no connection is attached (used by the drain)."""
        await self._idle.wait()

    async def join(self, conn: Connection, channel: str, resume: Position | None = None) -> None:
        """Join ``channel``; with ``resume``, first deliver what was published after it.

        Raises BrokerUnavailable if the channel cannot be subscribed or its history read; nothing
        is changed then. With ``resume`` the client is told ``{"type":"recovered",...}``.
        """
        ch = self._channels.get(channel)
        if ch is None or not ch.subscribed:
            ch = await self._subscribe(channel)
        if resume is None or not self.history:
            if resume is not None:  # asked for, but this deployment keeps no history: say so
                conn.offer(Outgoing(HISTORY_OFF_FRAME))
            start = ch.backlog[-1].offset if ch.backlog else ch.offset
            ch.members[conn.id] = Subscription(conn, start, ch.epoch)
            conn.channels.add(channel)
            return
        sub = Subscription(conn, 0, resume.epoch)
        sub.pending = []  # live messages wait here while the history is read
        ch.recovering[conn.id] = sub
        try:
            history = await self.broker.history(channel, resume.offset)
        except BaseException:  # BrokerUnavailable, or the session was cancelled meanwhile
            del ch.recovering[conn.id]
            await self._release(channel, ch)
            raise
        del ch.recovering[conn.id]
        # From here to the end nothing awaits, so no live message can slip in between.
        conn.make_room(len(history.entries) + len(sub.pending) + 1)
        if history.covers(resume.offset, resume.epoch):
            sub.offset = resume.offset
            for env in history.entries:
                self._offer(sub, env)
            frame = recovered_frame(True, history.position.epoch, sub.offset, count=sub.offset - resume.offset)
            metrics.RECOVERIES.labels("client", "ok").inc()
        else:
            sub.offset, sub.epoch = history.position.offset, history.position.epoch
            reason = history.lost_reason(resume.offset, resume.epoch)
            frame = recovered_frame(False, sub.epoch, sub.offset, reason=reason)
            metrics.RECOVERIES.labels("client", "lost").inc()
        conn.offer(Outgoing(frame))
        for env in sub.pending:
            if env.epoch != sub.epoch:
                sub.offset, sub.epoch = 0, env.epoch
            self._offer(sub, env)
        sub.pending = None
        ch.members[conn.id] = sub
        conn.channels.add(channel)

    async def leave(self, conn: Connection, channel: str) -> None:
        conn.channels.discard(channel)
        ch = self._channels.get(channel)
        if ch is not None and ch.members.pop(conn.id, None) is not None:
            await self._release(channel, ch)

    async def drop(self, conn: Connection) -> None:
        """Leave every channel: called once when a connection ends."""
        self.connections.discard(conn)
        for channel in tuple(conn.channels):
            await self.leave(conn, channel)
        if not self.connections:
            self._idle.set()

    async def publish(self, channel: str, frame: bytes, exclude: Connection | None = None) -> Position | None:
        """Send ``frame`` to every member of ``channel`` on every instance, except ``exclude``."""
        try:
            return await self.broker.publish(channel, header(exclude.id if exclude else None), frame)
        except BrokerUnavailable:
            metrics.PUBLISH_FAILURES.inc()
            raise

    def dispatch(self, channel: str, envelope: bytes) -> None:
        ch = self._channels.get(channel)
        if ch is None:
            return
        try:
            env = unpack(envelope)
        except ValueError:
            metrics.LISTENER_ERRORS.inc()
            log.warning("dropped a malformed envelope on a channel")
            return
        if env.offset:
            self.accept(channel, ch, env)
        else:
            self.deliver(ch, env)

    def accept(self, channel: str, ch: Channel, env: Envelope) -> None:
        """Deliver a positioned message in offset order, or hold it back while a gap is fetched."""
        if ch.backlog is not None:
            self._catch_up.hold(ch, env)
            return
        if env.epoch != ch.epoch:
            if ch.epoch:
                # Offsets restarted: the history these members were following is gone. They are
                # told, then follow the new epoch from its start.
                self._catch_up.tell_lost(ch, Position(0, env.epoch), EPOCH_CHANGED)
            else:  # the channel's position was not known yet: follow it from here
                ch.offset, ch.epoch = env.offset - 1, env.epoch
                for sub in ch.members.values():
                    sub.epoch = sub.epoch or env.epoch
        if env.offset > ch.offset + 1:
            self._catch_up.start(channel, ch, env)
            return
        if env.offset > ch.offset:
            ch.offset = env.offset
        self.deliver(ch, env)

    def deliver(self, ch: Channel, env: Envelope) -> None:
        started = time.perf_counter()
        out = Outgoing(env.frame)  # its wire frame is built once, on first use, for every member
        exclude, offset = env.exclude, env.offset
        delivered = 0
        if offset:
            for conn_id, sub in ch.members.items():
                if sub.offset < offset:  # each offset at most once per subscription
                    sub.offset = offset
                    if conn_id != exclude and sub.conn.offer(out):
                        delivered += 1
            for sub in ch.recovering.values():
                assert sub.pending is not None
                sub.pending.append(env)
        else:
            for conn_id, sub in ch.members.items():
                if conn_id != exclude and sub.conn.offer(out):
                    delivered += 1
        finished = time.perf_counter()
        metrics.HOT_BROADCASTS.inc()
        metrics.HOT_DELIVERED.inc(delivered)
        metrics.HOT_FANOUT.observe(finished - started)
        metrics.HOT_PUBLISH_TO_DELIVERY.observe(max(0.0, time.time() - env.published_at))

    async def close(self) -> None:
        """Stop background catch-ups; called at shutdown, before the broker closes."""
        await self._catch_up.close()

    def on_reconnect(self) -> None:
        """The broker's pub/sub connection came back: fetch what every channel missed meanwhile."""
        if self.history:
            for channel, ch in self._channels.items():
                self._catch_up.start(channel, ch, None)

    @staticmethod
    def _offer(sub: Subscription, env: Envelope) -> None:
        if env.offset > sub.offset:
            sub.offset = env.offset
            if env.exclude != sub.conn.id:
                sub.conn.offer(Outgoing(env.frame))

    async def _subscribe(self, channel: str) -> Channel:
        async with self._channel_lock(channel):
            ch = self._channels.get(channel)
            if ch is not None:
                return ch
            # Registered before SUBSCRIBE: a message may arrive right after Redis confirms it,
            # before this coroutine runs again. Other joiners wait for ``subscribed``, set once
            # the channel's position is known too, so every member starts from it.
            ch = self._channels[channel] = Channel()
            try:
                await self.broker.subscribe(channel)
            except BaseException:  # BrokerUnavailable, or the joining session was cancelled
                del self._channels[channel]
                raise
            metrics.CHANNELS.inc()
            if self.history:
                # Where the channel stands, so that a reconnect knows what to fetch.
                try:
                    position = (await self.broker.history(channel, 1 << 62)).position
                except BrokerUnavailable:
                    position = None  # unknown for now; the first message tells
                except BaseException:
                    # The joining session was cancelled: leave no memberless subscription behind.
                    del self._channels[channel]
                    metrics.CHANNELS.dec()
                    with contextlib.suppress(BrokerUnavailable):
                        await self.broker.unsubscribe(channel)
                    raise
                if position is not None and not ch.epoch:
                    ch.offset, ch.epoch = position.offset, position.epoch
            ch.subscribed = True
            return ch

    async def _release(self, channel: str, ch: Channel) -> None:
        """Unsubscribe once nobody local needs the channel."""
        if ch.members or ch.recovering:
            return
        async with self._channel_lock(channel):
            # A join may have slipped in while we waited for the lock.
            if self._channels.get(channel) is ch and not ch.members and not ch.recovering:
                del self._channels[channel]
                metrics.CHANNELS.dec()
                with contextlib.suppress(BrokerUnavailable):
                    await self.broker.unsubscribe(channel)

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
