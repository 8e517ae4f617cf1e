"""The Hub's own catch-up after its pub/sub feed had a gap.

A channel's pub/sub feed has a gap when the broker connection dropped (``Hub.on_reconnect``) or
when an offset arrives that is not the next one (``Hub.accept``). Then ``CatchUp`` holds the live
messages back in ``Channel.backlog`` (app/channel_state.py), reads the missed ones from history,
delivers them, and replays the backlog: members get every offset once, in order. If history no
longer covers the gap, members that missed something are told ``{"type":"recovered","ok":false,...}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

import orjson

from app import metrics
from app.broker import Broker, BrokerUnavailable, Position
from app.channel_state import Channel, recovered_frame
from app.errors import CentrifugeDisconnect
from app.protocol import CENTRIFUGE_ENCODINGS, Envelope, Outgoing

log = logging.getLogger("switchboard.recovery")

BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
POSITION_UNKNOWN = "position unknown"


def recovered_push(channel_json: bytes, position: Position, reason: str) -> bytes:
    """The ``/ws`` form of a lost-history notice: ``{"op":"recovered","channel":...,"ok":false,...}``."""
    return b'{"op":"recovered","channel":%s,"ok":false,"offset":%d,"epoch":%s,"reason":%s}' % (
        channel_json,
        position.offset,
        orjson.dumps(position.epoch),
        orjson.dumps(reason),
    )


class Fanout(Protocol):
    """What a catch-up needs of the Hub that runs it. The Hub hands itself in (``CatchUp(self)``),
    so this layer below it never imports it."""

    @property
    def broker(self) -> Broker: ...

    def channel(self, name: str) -> Channel | None: ...

    def deliver(self, ch: Channel, env: Envelope) -> None: ...

    def accept(self, channel: str, ch: Channel, env: Envelope) -> None: ...


class CatchUp:
    def __init__(self, hub: Fanout) -> None:
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
                if sub.encoding in CENTRIFUGE_ENCODINGS:
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
