"""What the Hub keeps per channel and per subscription: offsets, held-back messages, rates.

``Channel`` is one channel of this process (its members, the last position it received, the
backlog a catch-up holds); ``Subscription`` one connection in one channel (the last offset it was
given); ``Joined`` where a joiner stands after ``Hub.join``. The Hub (app/hub.py) and its catch-up
(app/recovery.py) change them; the protocols read them to build their replies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import orjson

from app.broker import Position
from app.namespaces import ChannelOptions
from app.protocol import Envelope, Outgoing
from app.tutorial import is_tutorial

if TYPE_CHECKING:
    from app.connection import Connection


class DeltaState(Protocol):
    """What the Hub uses of a channel's Fossil delta state. ``app.delta.DeltaStream`` is one;
    app/delta.py builds on this module, so this module names what it needs as a Protocol and
    never imports it."""

    subscribers: int

    def push(self, ch: Channel, env: Envelope, sub: Subscription, mark: tuple[str, int, str] | None) -> Outgoing | None:
        """The frame for ``sub``, built once per message; None if ``env`` is no publication."""
        ...


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
        self.delta: DeltaState | None = None  # only while members negotiated deltas (app/delta.py)
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
