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
from collections.abc import AsyncIterator, Callable, Collection, ItemsView

import orjson

from app import metrics, tracing
from app.broker import Broker, BrokerUnavailable, History, HistoryOptions, Position
from app.broker.base import EPOCH_CHANGED
from app.channel_state import Channel, Joined, Subscription, Unsubscribed
from app.connection import Connection, ConnectionGone
from app.delta import delta_joined, delta_left
from app.errors import RESERVED_CHANNEL, ErrorCode, ProtocolError
from app.history_reads import SharedReads
from app.namespaces import Namespaces
from app.protocol import (
    AS_PUBLISHED,
    CENTRIFUGE_ENCODINGS,
    CENTRIFUGE_PROTOBUF_PUSH,
    CENTRIFUGE_PUSH,
    CENTRIFUGE_QUIET,
    ENCODINGS,
    PROTOBUF_ENCODINGS,
    WS_PUB,
    Envelope,
    Outgoing,
    Wire,
    encoding_for,
    header,
    unpack,
    wrap_pub,
)
from app.protocols import centrifuge_delta, centrifuge_protobuf
from app.protocols.centrifuge_wire import channel_publication, channel_push
from app.recovery import CatchUp
from app.reserved import internal
from app.tutorial import is_tutorial

Announce = Callable[[Subscription, Joined], None]
"""Called once by ``Hub.join``, at the moment the joiner's reply belongs in its stream."""
NO_HISTORY = HistoryOptions(size=0)
SKIP = Outgoing(b"")  # a message a protocol has no push for: not sent


def tutorial_announce(sub: Subscription, joined: Joined) -> None:
    """The tutorial endpoints' way: ``{"type":"recovered",...}`` after a resume, nothing otherwise."""
    frame = joined.tutorial_frame()
    if frame is not None:
        sub.conn.offer(Outgoing(frame))


log = logging.getLogger("switchboard.hub")


class Hub:
    def __init__(self, broker: Broker, namespaces: Namespaces | None = None) -> None:
        self.broker = broker
        self.namespaces = namespaces or Namespaces(None, broker.history_options)
        self._channels: dict[str, Channel] = {}
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.connections: set[Connection] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._catch_up = CatchUp(self)
        self._reads = SharedReads(broker)  # one read serves every client resuming from one offset
        # Control channels (user-targeted commands): subscribed for the process's whole life.
        self._control: dict[str, Callable[[bytes], None]] = {}

    def channels(self) -> Collection[str]:
        """The channels this process needs: what to resubscribe after a broker reconnect."""
        return (*self._channels, *self._control)

    async def add_control(self, channel: str, handler: Callable[[bytes], None]) -> None:
        """Hand every frame published on ``channel`` to ``handler``, from now until shutdown.

        If the broker is down now, the reconnect subscribes it (``channels`` lists it).
        """
        self._control[channel] = handler
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.subscribe(channel)

    def channel(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def local_channels(self) -> ItemsView[str, Channel]:
        """This process's channels with their state (for the server API's cluster queries)."""
        return self._channels.items()

    def members(self, channel: str) -> int:
        ch = self._channels.get(channel)
        return len(ch.members) if ch is not None else 0

    def attach(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._idle.clear()

    async def wait_idle(self) -> None:
        """Return once no connection is attached (used by the drain)."""
        await self._idle.wait()

    async def join(
        self,
        conn: Connection,
        channel: str,
        resume: Position | None = None,
        *,
        ws: bool = False,
        wire: Wire | None = None,
        announce: Announce = tutorial_announce,
        registered: Callable[[], None] | None = None,
        delta: bool = False,
    ) -> Subscription:
        """Join ``channel``; with ``resume``, first deliver what was published after it.

        ``ws`` marks a ``/ws`` session: it gets ``pub`` pushes (tutorial frames wrapped as their
        ``data``); ``wire`` names any protocol (``ws`` is ``Wire.WS``). A Centrifugo subscription's
        replay is collected on the Subscription for ``announce`` to put in its reply.
        ``announce`` is called once, after any recovered messages and before any live
        one. ``registered`` is called once the connection is in the channel (before a replay), from
        when on it may do anything else: a publish sees the subscription, an unsubscribe ends the
        replay. ``delta``: a Centrifugo subscriber that negotiated Fossil deltas (app/delta.py).
        Raises BrokerUnavailable if the channel cannot be subscribed or its history read,
        ConnectionGone if the connection closed during the join, or Unsubscribed if the client
        left the channel during it; nothing is changed then.
        Raises ProtocolError (102) for a name of Switchboard's own: every entry point refuses those
        already (app/permissions.py), and this wall keeps a client channel from ever shadowing a
        control channel in ``dispatch``, or its last leave from UNSUBSCRIBEing one.
        """
        self._refuse_internal(channel)
        wire = wire if wire is not None else Wire.WS if ws else Wire.TUTORIAL
        ws = wire is Wire.WS
        ch = self._channels.get(channel)
        if ch is None or not ch.subscribed:
            ch = await self._subscribe(channel)
            if conn.close_code is not None:
                # It ended during the SUBSCRIBE, and its cleanup ran already: a join no client
                # command awaits (a server-side subscribe) must not leave a member behind.
                await self._release(channel, ch)
                raise ConnectionGone
        # The Hub's own copy of the name from here on: what the connection keeps is then one string
        # per channel in the process, not one per member (about 55 bytes a subscription).
        channel = ch.name
        encoding = encoding_for(wire, ch.tutorial)
        if resume is None or not ch.history:
            start = ch.backlog[-1].offset if ch.backlog else ch.offset
            sub = Subscription(conn, start, ch.epoch, ws, encoding)
            sub.delta = delta
            announce(sub, Joined(Position(start, ch.epoch), history_off=resume is not None))
            self._add_member(ch, sub)
            conn.channels.add(channel)
            return sub
        sub = Subscription(conn, 0, resume.epoch, ws, encoding)
        sub.delta = delta
        if encoding in CENTRIFUGE_ENCODINGS:
            sub.collected = []
        sub.pending = []  # live messages wait here while the history is read
        ch.recovering[conn.id] = sub
        # In the channel from now: a second subscribe is refused, an unsubscribe ends the replay.
        conn.channels.add(channel)
        if registered is not None:
            registered()
        try:
            joined = await self._replay(channel, ch, sub, resume)
        except BaseException:  # BrokerUnavailable, ConnectionGone, Unsubscribed, or cancelled
            if ch.recovering.get(conn.id) is sub:
                del ch.recovering[conn.id]
            if not sub.left:  # else leave() did it, and the client may be joining again since
                conn.channels.discard(channel)
            await self._release(channel, ch)
            raise
        del ch.recovering[conn.id]
        # From here to the end nothing awaits, so no live message can slip in between.
        conn.make_room(len(sub.pending) + 1)
        announce(sub, joined)
        sub.collected = None  # held-back live messages are pushes, after the reply
        for env in sub.pending:
            if env.epoch != sub.epoch:
                sub.offset, sub.epoch = 0, env.epoch
            self._offer(ch, sub, env)
        sub.pending = None
        self._add_member(ch, sub)
        conn.channels.add(channel)
        return sub

    async def _replay(self, channel: str, ch: Channel, sub: Subscription, resume: Position) -> Joined:
        """Deliver what ``sub`` missed after ``resume``, if history still holds all of it.

        A page at a time (``HistoryOptions.read_bytes``): the next page is read once the client
        has taken the last (``Connection.drained``), so a replay holds one page per client, and a
        client that stops reading ends as a slow consumer. Meanwhile live messages wait in
        ``sub.pending``; if too many arrive they are dropped there and read from history instead.
        """
        conn, since, epoch = sub.conn, resume.offset, resume.epoch
        history = await self._paced_read(conn, channel, sub, since)
        while history.covers(since, epoch):
            sub.offset, sub.epoch = max(sub.offset, since), history.position.epoch
            conn.make_room(len(history.entries))
            for env in history.entries:
                self._offer(ch, sub, env)
            if not (history.more or sub.overflowed):
                metrics.RECOVERIES.labels("client", "ok").inc()
                return Joined(Position(sub.offset, sub.epoch), ok=True, count=sub.offset - resume.offset)
            # Past the gap, a re-read only chases live messages dropped from ``pending``: pacing it
            # could leave a busy channel's resumer behind for ever. Its bytes are still spent.
            paced = history.more
            since, epoch, sub.overflowed = sub.offset, sub.epoch, False
            await conn.drained()
            history = await self._paced_read(conn, channel, sub, since, paced)
        # History does not cover the gap (or stopped covering it halfway through a long replay).
        reason = history.lost_reason(since, epoch)
        sub.offset, sub.epoch = history.position.offset, history.position.epoch
        metrics.RECOVERIES.labels("client", "lost").inc()
        return Joined(Position(sub.offset, sub.epoch), ok=False, reason=reason)

    async def _paced_read(
        self, conn: Connection, channel: str, sub: Subscription, since: int, paced: bool = True
    ) -> History:
        """A replay's next page, once the connection's history budget allows (app/budgets.py):
        a replay is paced, not refused, so a client that resumes a long gap still gets all of it.
        Raises Unsubscribed if the client left the channel meanwhile: nothing more is pushed."""
        if paced and not sub.left:
            await conn.history_turn()
        if not sub.left:
            history = await self._reads.history(channel, since)
            conn.spend_history(sum(len(env.frame) for env in history.entries))
        if sub.left:
            raise Unsubscribed
        return history

    async def leave(self, conn: Connection, channel: str) -> None:
        conn.channels.discard(channel)
        ch = self._channels.get(channel)
        if ch is None:
            return
        sub = ch.members.pop(conn.id, None)
        if sub is not None:
            delta_left(ch, sub)
            await self._release(channel, ch)
        elif conn.id in ch.recovering:
            # Its replay stops at its next step; a new subscribe may start another meanwhile.
            ch.recovering.pop(conn.id).left = True
            await self._release(channel, ch)

    async def drop(self, conn: Connection) -> None:
        """Leave every channel: called once when a connection ends."""
        self.connections.discard(conn)
        for channel in tuple(conn.channels):
            await self.leave(conn, channel)
        if not self.connections:
            self._idle.set()

    async def publish(
        self,
        channel: str,
        frame: bytes,
        exclude: Connection | None = None,
        *,
        ephemeral: bool = False,
        history: HistoryOptions | None = None,
        idempotency_key: str | None = None,
    ) -> Position | None:
        """Send ``frame`` to every member of ``channel`` on every instance, except ``exclude``.

        The channel's namespace decides its history (``history``, when the caller has looked it
        up already); ``ephemeral`` frames (join/leave pushes) skip it: no offset, not recoverable.
        ``idempotency_key``: see ``Broker.publish``.
        """
        self._refuse_internal(channel)
        if ephemeral:
            history = NO_HISTORY
        elif history is None:
            history = self.namespaces.for_channel(channel).history
        if tracing.ON:
            return await self._traced_publish(channel, frame, exclude, history, idempotency_key)
        head = header(exclude.id if exclude else None)
        try:
            return await self.broker.publish(channel, head, frame, history, idempotency_key)
        except BrokerUnavailable:
            metrics.PUBLISH_FAILURES.inc()
            raise

    async def _traced_publish(
        self,
        channel: str,
        frame: bytes,
        exclude: Connection | None,
        history: HistoryOptions,
        idempotency_key: str | None,
    ) -> Position | None:
        """``publish`` inside a ``publish`` span, whose context the envelope carries if sampled."""
        attributes = {"messaging.system": "switchboard", "messaging.destination.name": channel}
        with tracing.span("publish", "producer", attributes) as span:
            head = header(exclude.id if exclude else None, trace=tracing.traceparent(span))
            try:
                position = await self.broker.publish(channel, head, frame, history, idempotency_key)
            except BrokerUnavailable:
                metrics.PUBLISH_FAILURES.inc()
                raise
            if position is not None and span is not None:
                span.set_attribute("switchboard.offset", position.offset)
            return position

    async def history_page(self, channel: str, since: int | None, limit: int) -> tuple[list[bytes], Position]:
        """Publications as pushed (oldest first): the first ``limit`` after ``since``, or the latest
        ``limit`` without it; and where the channel stands. Raises BrokerUnavailable."""
        if since is None:  # the latest `limit`: find the top first
            top = (await self.broker.history(channel, 1 << 62)).position.offset
            since = max(0, top - limit)
        found = await self.broker.history(channel, since, limit)
        if is_tutorial(channel):
            name = orjson.dumps(channel)
            return [wrap_pub(name, env) for env in found.entries], found.position
        return [env.frame for env in found.entries], found.position

    def dispatch(self, channel: str, envelope: bytes) -> None:
        # Control channels first: no client channel may ever stand in for one.
        control = self._control.get(channel)
        if control is not None:
            control(envelope[envelope.index(b"\n") + 1 :])
            return
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
            else:
                if not ch.known:  # never learnt where the channel stood: follow it from here
                    ch.offset, ch.known = env.offset - 1, True
                # else it had no epoch yet: this is its first, read from offset 1 (a gap is fetched)
                ch.epoch = env.epoch
                for sub in ch.members.values():
                    sub.epoch = sub.epoch or env.epoch
        if env.offset > ch.offset + 1:
            self._catch_up.start(channel, ch, env)
            return
        if env.offset > ch.offset:
            ch.offset = env.offset
        self.deliver(ch, env)

    def deliver(self, ch: Channel, env: Envelope) -> None:
        # A traced publication (its envelope carries a trace only if sampled): one span per
        # message per process, around the whole fan-out. Untraced, this is one comparison.
        span = tracing.start_deliver(env.trace, ch.name) if env.trace is not None else None
        started = time.perf_counter()
        # Built once, on first use, for every member: the frame as published, and (on a tutorial
        # channel with /ws members) the ``pub`` push that wraps it.
        exclude, offset = env.exclude, env.offset
        # Where the message moves its subscribers to: a stream's resume cursor follows it.
        mark = (ch.name, offset, env.epoch) if offset else None
        out = Outgoing(env.frame, mark)
        encoded: list[Outgoing | None] | None = None  # the other encodings, made on first need
        delivered = 0
        for conn_id, sub in ch.members.items():
            if offset:
                if sub.offset >= offset:  # each offset at most once per subscription
                    continue
                sub.offset = offset
            if conn_id == exclude:
                continue
            if sub.encoding == AS_PUBLISHED:
                delivered += sub.conn.offer(out)
                continue
            if sub.delta and ch.delta is not None:
                out_delta = ch.delta.push(ch, env, sub, mark)
                if out_delta is not None:
                    delivered += sub.conn.offer(out_delta)
                    continue
            if encoded is None:
                encoded = [None] * ENCODINGS
            other = encoded[sub.encoding]
            if other is None:
                other = encoded[sub.encoding] = self._encode(ch, env, sub.encoding, mark)
            if other is not SKIP:
                delivered += sub.conn.offer(other)
        if offset and ch.recovering:  # almost always empty: nothing to do per message
            limit, max_bytes = max(1, ch.options.history.size), ch.options.history.read_bytes
            for sub in ch.recovering.values():
                sub.hold(env, limit, max_bytes)
        finished = time.perf_counter()
        if span is not None:
            span.set_attribute("switchboard.delivered", delivered)
            span.end()
        ch.count_publication(finished)
        metrics.HOT_BROADCASTS.inc()
        metrics.HOT_DELIVERED.inc(delivered)
        metrics.HOT_FANOUT.observe(finished - started)
        metrics.HOT_PUBLISH_TO_DELIVERY.observe(max(0.0, time.time() - env.published_at))

    async def close(self) -> None:
        """Stop background catch-ups; called at shutdown, before the broker closes."""
        await self._catch_up.close()

    def on_reconnect(self) -> None:
        """The broker's pub/sub connection came back: fetch what every channel missed meanwhile."""
        for channel, ch in self._channels.items():
            if ch.history:
                self._catch_up.start(channel, ch, None)

    def _refuse_internal(self, channel: str) -> None:
        if channel in self._control or internal(channel):
            raise ProtocolError(ErrorCode.UNKNOWN_CHANNEL, RESERVED_CHANNEL)

    @staticmethod
    def _encode(ch: Channel, env: Envelope, encoding: int, mark: tuple[str, int, str] | None) -> Outgoing:
        """One message in one wire format; SKIP if that protocol has no push for it."""
        if encoding == WS_PUB:
            return Outgoing(wrap_pub(ch.name_json, env), mark)
        if encoding in (CENTRIFUGE_PUSH, CENTRIFUGE_QUIET):
            push = channel_push(ch.name_json, env, ch.tutorial, join_leave=encoding == CENTRIFUGE_PUSH)
            return SKIP if push is None else Outgoing(push, mark)
        if encoding in PROTOBUF_ENCODINGS:
            joins = encoding == CENTRIFUGE_PROTOBUF_PUSH
            pb_push = centrifuge_protobuf.channel_push(ch.name, env, ch.tutorial, join_leave=joins)
            return SKIP if pb_push is None else centrifuge_protobuf.BinaryOutgoing(pb_push, mark)
        return Outgoing(env.frame, mark)

    @classmethod
    def _offer(cls, ch: Channel, sub: Subscription, env: Envelope) -> None:
        """One replayed or held-back message to one subscription (a replay is per client)."""
        if env.offset > sub.offset:
            sub.offset = env.offset
            if env.exclude != sub.conn.id:
                if sub.collected is not None:
                    if sub.delta:
                        pub = centrifuge_delta.full_publication(env, ch.tutorial)
                    elif sub.encoding in PROTOBUF_ENCODINGS:
                        pub = centrifuge_protobuf.channel_publication(env, ch.tutorial)
                    else:
                        pub = channel_publication(env, ch.tutorial)
                    if pub is not None:
                        sub.collected.append(pub)
                    return
                mark = (ch.name, env.offset, env.epoch)
                if sub.delta:  # one by one, so full: the next live one is full too (DeltaStream)
                    push = centrifuge_delta.full_push(ch.name_json, env, ch.tutorial)
                    out = SKIP if push is None else Outgoing(push, mark)
                else:
                    out = cls._encode(ch, env, sub.encoding, mark)
                if out is not SKIP:
                    sub.conn.offer(out)

    @staticmethod
    def _add_member(ch: Channel, sub: Subscription) -> None:
        ch.members[sub.conn.id] = sub
        delta_joined(ch, sub)

    async def _subscribe(self, channel: str) -> Channel:
        async with self._channel_lock(channel):
            ch = self._channels.get(channel)
            if ch is not None:
                return ch
            # Registered before SUBSCRIBE: a message may arrive right after Redis confirms it,
            # before this coroutine runs again. Other joiners wait for ``subscribed``, set once
            # the channel's position is known too, so every member starts from it.
            ch = self._channels[channel] = Channel(channel, self.namespaces.for_channel(channel))
            try:
                await self.broker.subscribe(channel)
            except BaseException:  # BrokerUnavailable, or the joining session was cancelled
                del self._channels[channel]
                raise
            metrics.CHANNELS.inc()
            if ch.history:
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
                if position is not None and not ch.known:
                    ch.offset, ch.epoch, ch.known = position.offset, position.epoch, True
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
