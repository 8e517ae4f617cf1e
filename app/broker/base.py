"""The broker interface: cross-process pub/sub with per-channel history, chosen by URL scheme."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from app.protocol import Envelope

OnMessage = Callable[[str, bytes], None]
"""Called by the broker's single listener for every message, in order; must not block."""

ChannelSource = Callable[[], Collection[str]]
"""Returns the channels this process needs; read after a reconnect to resubscribe."""

OnReconnect = Callable[[], None]
"""Called after the listener has resubscribed following a lost connection: messages may be missed."""


# The words a client is told when recovery is impossible because the history was lost.
EPOCH_CHANGED = "epoch changed"


class BrokerUnavailable(Exception):
    """The broker cannot take this operation now; the caller tells its client and carries on."""


class SlotMoved(BrokerUnavailable):
    """Redis Cluster answered MOVED or ASK: the command did not run, so it may be sent again."""


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """How much of each channel the broker keeps for recovery. ``size == 0`` switches history off."""

    size: int = 1000
    ttl: float = 300.0  # seconds a channel's messages live after its last publish
    meta_ttl: float = 86400.0  # seconds its epoch and offset counter live after its last publish
    # The most one history read returns, in bytes of messages (always at least one message): a
    # replay or a ``history`` call is read in pages this size, never all at once.
    read_bytes: int = 1 << 20

    @property
    def enabled(self) -> bool:
        return self.size > 0


@dataclass(frozen=True, slots=True)
class Position:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class History:
    """A channel's history after an offset, read atomically with its current position.

    ``entries`` are envelopes in offset order. If ``since`` was older than the oldest message kept,
    the first entry's offset is above ``since + 1``: that is a gap, which ``covers`` reports. A read
    is bounded (a count, ``HistoryOptions.read_bytes``): ``more`` says the channel goes on after it.

    A channel never published to (or whose history expired) has no epoch: position ``(0, "")``.
    Reading does not create one, so a join leaves no key behind; the first publish does. A reader
    at ``(0, "")`` has seen nothing of any epoch, so it is covered by any epoch read from its start.
    """

    position: Position
    entries: list[Envelope]

    def covers(self, since: int, epoch: str) -> bool:
        """True if these entries are exactly everything published after ``since`` in ``epoch``."""
        if not self.same_epoch(since, epoch) or since > self.position.offset:
            return False
        if since == self.position.offset:
            return True
        return bool(self.entries) and self.entries[0].offset == since + 1

    def lost_reason(self, since: int, epoch: str) -> str:
        """Why ``covers`` is false, in the words a client is told."""
        if not self.same_epoch(since, epoch):
            return EPOCH_CHANGED
        return "offset ahead of channel" if since > self.position.offset else "history too short"

    @property
    def more(self) -> bool:
        """True if the read stopped short of the channel's last message: read on from the last entry."""
        return bool(self.entries) and self.entries[-1].offset < self.position.offset

    def same_epoch(self, since: int, epoch: str) -> bool:
        """``epoch`` is the channel's, or the reader is at the very start (``(0, "")``)."""
        return epoch == self.position.epoch or (not epoch and since == 0)


def new_epoch() -> str:
    """Hex, so that it can be spliced into JSON unescaped."""
    return secrets.token_hex(6)


class EpochSource:
    """Fresh epoch candidates without a random read per publish: a random prefix and a counter.

    Every publish must offer a fresh one (it becomes the epoch if the channel has none), and no two
    may ever be equal, or a new history could pass for an old one.
    """

    def __init__(self) -> None:
        self._prefix = new_epoch()
        self._count = 0

    def __call__(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count:x}"


class Broker(Protocol):
    """Cross-process pub/sub with an optional bounded history per channel.

    Guarantees:
      * Order: messages on one channel reach every subscriber in publish order. With history on,
        the order is the offset order: the offset is assigned, the message stored and published
        in one atomic step, so a subscriber whose connection stayed up sees offsets 1, 2, 3...
      * Delivery: pub/sub alone is at-most-once. A message published while a subscriber's broker
        connection is down is not delivered to it live; with history on, ``history`` returns it
        for as long as the history keeps it (``HistoryOptions``), and ``on_reconnect`` is called
        so that the Hub can fetch it.
      * The epoch changes whenever a channel's history was lost (expiry, a Redis restart without
        persistence), so a reader can tell "nothing missed" from "cannot know".
      * ``subscribe`` returns once the broker confirms the subscription, so a message published
        after it returns is delivered (no race on the first subscribe).
      * ``publish`` raises ``BrokerUnavailable`` rather than dropping a message silently; once it
        returns, the message is stored (with history on) and published.
      * The process's own publishes come back through ``on_message`` like everyone else's:
        local and remote delivery share one path.
    """

    history_options: HistoryOptions

    async def start(self, on_message: OnMessage, channels: ChannelSource, on_reconnect: OnReconnect) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(
        self,
        channel: str,
        head: bytes,
        frame: bytes,
        history: HistoryOptions | None = None,
        idempotency_key: str | None = None,
    ) -> Position | None:
        """Publish ``frame`` (a JSON object) with envelope header ``head`` (``protocol.header``).

        ``history`` is the channel's own (from its namespace); None means ``history_options``.
        Returns the position assigned, or None when the channel keeps no history.

        With ``idempotency_key``, a publish with the same key on the same channel within the
        broker's idempotency TTL publishes nothing and returns the first one's position, on any
        instance: the check, the publish and the record are one atomic step. The key arrives
        scoped to its publisher (``app.session.idempotency_key_of``); the broker treats it as opaque.
        """
        ...

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        """Messages after offset ``since`` and the current position, ``(0, "")`` if it has none.

        At most ``limit`` messages, and at most ``history_options.read_bytes`` of them (but always
        one, if there is one): ``History.more`` says there is more. Never creates a channel's epoch
        or any other state: only a publish does.
        """
        ...

    async def remove_history(self, channel: str) -> None:
        """Drop a channel's stored messages, keeping its position: offsets go on from where they
        were, so a reader behind them learns its history is gone rather than reading a new one."""
        ...

    def healthy(self) -> bool: ...
