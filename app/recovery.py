"""Per-channel state for offsets and the Hub's own catch-up after its pub/sub feed had a gap.

A channel's pub/sub feed has a gap when the broker connection dropped (``Hub.on_reconnect``) or
when an offset arrives that is not the next one (``Hub.accept``). Then ``CatchUp`` holds the live
messages back in ``Channel.backlog``, reads the missed ones from history, delivers them, and
replays the backlog: members get every offset once, in order. If history no longer covers the
gap, members that missed something are told ``{"type":"recovered","ok":false,...}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from app import metrics
from app.broker import BrokerUnavailable, Position
from app.errors import CentrifugeDisconnect
from app.namespaces import ChannelOptions
from app.protocol import CENTRIFUGE_PUSH, Envelope, Outgoing
from app.tutorial import is_tutorial

if TYPE_CHECKING:
    from app.connection import Connection
    from app.delta import DeltaStream
    from app.hub import Hub

log = logging.getLogger("switchboard.recovery")

BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
POSITION_UNKNOWN = "position unknown"


class Subscription:
    """One connection in one channel, and the last offset it was given (it never gets it again).

    ``ws``: the connection speaks the ``/ws`` protocol. ``encoding``: how it gets the channel's
    messages (``app.protocol.AS_PUBLISHED``, ``WS_PUB``: a ``/ws`` connection on a tutorial channel,
    whose frames it gets wrapped in ``pub`` pushes, or ``CENTRIFUGE_PUSH``). ``collected``: while
    not None, a replay's messages are kept here, encoded, instead of sent (Centrifugo's SDKs take
    a recovery's publications in the subscribe reply).
    """

    __slots__ = (
        "collected",
        "conn",
        "delta",
        "delta_seq",
        "encoding",
        "epoch",
        "left",
        "offset",
        "overflowed",
        "pending",
        "pending_bytes",
        "ws",
    )

    def __init__(self, conn: Connection, offset: int, epoch: str, ws: bool = False, encoding: int = 0) -> None:
        self.conn = conn
        self.offset = offset
        self.epoch = epoch
        self.ws = ws
        self.encoding = int(encoding)
        self.collected: list[bytes] | None = None
        # Live messages held back while this subscription's own history is read (Hub.join),
        # bounded like a channel's backlog, and in bytes like a page of history (the client's own
        # publishes may land here while its replay runs): ``overflowed`` means some were dropped
        # (read them again).
        self.pending: list[Envelope] | None = None
        self.pending_bytes = 0
        self.overflowed = False
        self.left = False  # unsubscribed while its replay ran: the replay stops (Hub.leave)
        # Fossil deltas negotiated (Centrifugo's JSON wire), and the channel's DeltaStream
        # publication number last sent to it (app/delta.py): -1, none yet.
        self.delta = False
        self.delta_seq = -1

    def hold(self, env: Envelope, limit: int, max_bytes: int) -> None:
        assert self.pending is not None
        if len(self.pending) >= limit or self.pending_bytes + len(env.frame) > max_bytes:
            self.pending.clear()
            self.pending_bytes = 0
            self.overflowed = True
        self.pending.append(env)
        self.pending_bytes += len(env.frame)


class Unsubscribed(Exception):
    """The client unsubscribed from the channel while its replay ran: the join is abandoned."""


@dataclass(frozen=True, slots=True)
class Joined:
    """Where a joiner stands; after a resume, whether it was recovered (``ok``) and how."""

    position: Position
    ok: bool | None = None  # None: no resume was asked for
    count: int = 0
    reason: str = ""
    history_off: bool = False  # a resume was asked for, but the channel keeps no history

    def tutorial_frame(self) -> bytes | None:
        if self.history_off:
            return HISTORY_OFF_FRAME
        if self.ok is None:
            return None
        p = self.position
        return recovered_frame(self.ok, p.epoch, p.offset, count=self.count, reason=self.reason)


RATE_WINDOW = 10.0  # seconds


class Channel:
    __slots__ = (
        "backlog",
        "delta",
        "epoch",
        "history",
        "known",
        "members",
        "name",
        "name_json",
        "offset",
        "options",
        "overflowed",
        "rate_count",
        "rate_previous",
        "rate_window",
        "recovering",
        "subscribed",
        "tutorial",
    )

    def __init__(self, name: str, options: ChannelOptions) -> None:
        # Looked up once, when the channel is first joined, never per message.
        self.options = options
        self.history = options.history.enabled
        self.tutorial = is_tutorial(name)
        self.name = name
        self.name_json = orjson.dumps(name)  # for the ``pub`` pushes that wrap tutorial frames
        self.members: dict[str, Subscription] = {}
        self.recovering: dict[str, Subscription] = {}
        self.subscribed = False
        self.delta: DeltaStream | None = None  # only while members negotiated deltas (app/delta.py)
        # The last position this process received; ``known`` once it has read or been told it
        # (a channel never published to is known at (0, "")).
        self.offset = 0
        self.epoch = ""
        self.known = False
        # Live messages held back while the Hub catches up; None when it is not catching up.
        self.backlog: list[Envelope] | None = None
        self.overflowed = False
        # Publications delivered here in the current and the previous RATE_WINDOW: two ints, not
        # a log, so the server API's top_channels can report a rate (app/cluster_query.py).
        self.rate_window = 0
        self.rate_count = 0
        self.rate_previous = 0

    def count_publication(self, now: float) -> None:
        window = int(now // RATE_WINDOW)
        if window != self.rate_window:
            self.rate_previous = self.rate_count if window == self.rate_window + 1 else 0
            self.rate_window, self.rate_count = window, 0
        self.rate_count += 1

    def rate(self, now: float) -> float:
        """Publications per second over the last one to two windows (monotonic ``now``)."""
        window = int(now // RATE_WINDOW)
        if window == self.rate_window:
            counted = self.rate_previous + self.rate_count
        elif window == self.rate_window + 1:
            counted = self.rate_count
        else:
            return 0.0
        return counted / (RATE_WINDOW + now - window * RATE_WINDOW)


HISTORY_OFF_FRAME = b'{"type":"recovered","ok":false,"reason":"history off"}'


def recovered_frame(ok: bool, epoch: str, offset: int, *, count: int = 0, reason: str = "") -> bytes:
    """What a client is told after recovery: ``offset``/``epoch`` are where it now stands."""
    body: dict[str, object] = {"type": "recovered", "ok": ok}
    body.update({"count": count} if ok else {"reason": reason})
    body.update(offset=offset, epoch=epoch)
    return orjson.dumps(body)


def recovered_push(channel_json: bytes, position: Position, reason: str) -> bytes:
    """The ``/ws`` form of a lost-history notice: ``{"op":"recovered","channel":...,"ok":false,...}``."""
    return b'{"op":"recovered","channel":%s,"ok":false,"offset":%d,"epoch":%s,"reason":%s}' % (
        channel_json,
        position.offset,
        orjson.dumps(position.epoch),
        orjson.dumps(reason),
    )


class CatchUp:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, channel: str, ch: Channel, first: Envelope | None) -> None:
        if ch.backlog is not None:  # already catching up; the running task will see this too
            if first is not None:
                self.hold(ch, first)
            return
        ch.backlog = [first] if first is not None else []
        task = asyncio.get_running_loop().create_task(self._run(channel, ch), name=f"switchboard-catch-up:{channel}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop every catch-up in flight (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def hold(self, ch: Channel, env: Envelope) -> None:
        assert ch.backlog is not None
        # The backlog is bounded by the history size: beyond it, the held messages are dropped
        # and read from history instead (they are there, or the gap is reported).
        if len(ch.backlog) >= max(1, ch.options.history.size):
            ch.backlog.clear()
            ch.overflowed = True
        ch.backlog.append(env)

    def tell_lost(self, ch: Channel, position: Position, reason: str, *, rewound: bool = False) -> None:
        """History cannot fill the gap: tell the members that missed something, then move on.

        ``rewound``: the channel's head went back (a failover to a replica that had not received
        the last writes), so members past it are told too: offsets they saw will be reused.
        """
        out = ws_out = None
        mark = (ch.name, position.offset, position.epoch)
        for sub in ch.members.values():
            if (
                sub.epoch != position.epoch
                or sub.offset < position.offset
                or (rewound and sub.offset > position.offset)
            ):
                sub.offset, sub.epoch = position.offset, position.epoch
                if sub.encoding == CENTRIFUGE_PUSH:
                    # Centrifugo's way: reconnect, and the SDK recovers what it can (or is told).
                    sub.conn.close(CentrifugeDisconnect.INSUFFICIENT_STATE, reason)
                elif sub.ws:
                    ws_out = ws_out or Outgoing(recovered_push(ch.name_json, position, reason), mark)
                    sub.conn.offer(ws_out)
                else:
                    out = out or Outgoing(_lost_frame(position, reason), mark)
                    sub.conn.offer(out)
        ch.offset, ch.epoch = position.offset, position.epoch
        metrics.RECOVERIES.labels("channel", "lost").inc()
        log.warning("channel history could not fill a gap (%s); members were told", reason)

    async def _run(self, channel: str, ch: Channel) -> None:
        hub, attempt = self._hub, 0
        while hub.channel(channel) is ch:
            since, epoch = ch.offset, ch.epoch
            try:
                history = await hub.broker.history(channel, since)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis is down again, most likely: keep holding, and retry when it may be back.
                if not isinstance(exc, BrokerUnavailable):
                    metrics.LISTENER_ERRORS.inc()
                    log.exception("reading channel history failed")
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))
                continue
            if hub.channel(channel) is not ch:
                return
            entries = history.entries
            if not ch.known:
                # This process never learnt where the channel stood, so it cannot tell what its
                # members missed: say so (unless nothing was ever published), and follow the
                # channel from its head.
                if history.position.epoch:
                    self.tell_lost(ch, history.position, POSITION_UNKNOWN)
                ch.known, entries = True, []
            elif history.covers(since, epoch):
                metrics.RECOVERIES.labels("channel", "ok").inc()
            elif not history.same_epoch(since, epoch):
                # Tell the members, then read the new epoch from its start.
                self.tell_lost(ch, Position(0, history.position.epoch), history.lost_reason(since, epoch))
                continue
            elif since > history.position.offset:
                # The head went back within the epoch (Redis failed over and lost the last writes).
                reason = history.lost_reason(since, epoch)
                self.tell_lost(ch, history.position, reason, rewound=True)
                entries = []
            else:
                # Too short: tell the members, then deliver what history still holds.
                start = entries[0].offset - 1 if entries else history.position.offset
                self.tell_lost(ch, Position(start, history.position.epoch), history.lost_reason(since, epoch))
            if entries:
                ch.epoch = history.position.epoch  # from "" if the channel had none when joined
                for sub in ch.members.values():
                    sub.conn.make_room(len(entries))
            for env in entries:
                ch.offset = env.offset
                hub.deliver(ch, env)
            if ch.overflowed:  # messages were dropped from the backlog: read them from history
                ch.overflowed = False
                assert ch.backlog is not None
                ch.backlog.clear()
                continue
            if entries and history.more:  # a long gap is read a page at a time
                continue
            backlog, ch.backlog = ch.backlog or [], None
            for env in backlog:
                hub.accept(channel, ch, env)  # a further gap starts another catch-up
            return


def _lost_frame(position: Position, reason: str) -> bytes:
    return recovered_frame(False, position.epoch, position.offset, reason=reason)
