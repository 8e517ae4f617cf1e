"""In-process broker: the default for a single instance, not a test double.

History follows the Redis broker's rules (app/broker/redis.py), checked lazily against a
monotonic clock instead of by key expiry.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from app.broker.base import ChannelSource, History, HistoryOptions, OnMessage, OnReconnect, Position, new_epoch
from app.protocol import Envelope, pack, splice, unpack

# How often expired channel histories are swept away, in seconds.
SWEEP_INTERVAL = 60.0


class _Channel:
    __slots__ = ("entries", "epoch", "history_expires", "meta_expires", "offset")

    def __init__(self, size: int) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.entries: deque[bytes] = deque(maxlen=size)
        self.history_expires = self.meta_expires = 0.0


class MemoryBroker:
    """Delivers synchronously inside ``publish``, so ordering is exactly publish order."""

    def __init__(
        self,
        history: HistoryOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        idempotency_ttl: float = 300.0,
    ) -> None:
        self.history_options = history or HistoryOptions()
        self._idempotency_ttl = idempotency_ttl
        # (channel, key) -> (the first publish's position, when the record expires)
        self._published: dict[tuple[str, str], tuple[Position | None, float]] = {}
        self._clock = clock
        self._on_message: OnMessage | None = None
        self._channels: set[str] = set()
        self._history: dict[str, _Channel] = {}
        self._next_sweep = 0.0

    async def start(self, on_message: OnMessage, channels: ChannelSource, on_reconnect: OnReconnect) -> None:
        self._on_message = on_message

    async def close(self) -> None:
        self._on_message = None
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(
        self,
        channel: str,
        head: bytes,
        frame: bytes,
        history: HistoryOptions | None = None,
        idempotency_key: str | None = None,
    ) -> Position | None:
        if idempotency_key is not None:
            self._sweep(self._clock())
            found = self._published.get((channel, idempotency_key))
            if found is not None and found[1] > self._clock():
                return found[0]
        position = self._publish(channel, head, frame, history or self.history_options)
        if idempotency_key is not None:
            self._published[(channel, idempotency_key)] = (position, self._clock() + self._idempotency_ttl)
        return position

    def _publish(self, channel: str, head: bytes, frame: bytes, opts: HistoryOptions) -> Position | None:
        position = None
        if opts.enabled:
            ch = self._channel(channel, opts)
            ch.offset += 1
            position = Position(ch.offset, ch.epoch)
            envelope = pack(head, splice(frame, ch.offset, ch.epoch), ch.offset, ch.epoch)
            ch.entries.append(envelope)
            now = self._clock()
            ch.history_expires = now + opts.ttl
            ch.meta_expires = now + opts.meta_ttl
        else:
            envelope = pack(head, frame)
        if self._on_message is not None and channel in self._channels:
            self._on_message(channel, envelope)
        return position

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        ch = self._existing(channel)
        if ch is None:
            return History(Position(0, ""), [])  # no epoch yet, and reading does not make one
        first = ch.offset - len(ch.entries) + 1  # offset of ch.entries[0]
        skip = max(0, since + 1 - first) if since < ch.offset else len(ch.entries)
        stop = len(ch.entries) if limit is None else min(len(ch.entries), skip + limit)
        entries: list[Envelope] = []
        budget = self.history_options.read_bytes
        for i in range(skip, stop):
            budget -= len(ch.entries[i])
            if entries and budget < 0:
                break
            entries.append(unpack(ch.entries[i]))
        return History(Position(ch.offset, ch.epoch), entries)

    async def remove_history(self, channel: str) -> None:
        ch = self._existing(channel)
        if ch is not None:
            ch.entries.clear()

    def healthy(self) -> bool:
        return self._on_message is not None

    def _sweep(self, now: float) -> None:
        """Drop expired histories and idempotency records, at most every SWEEP_INTERVAL."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for key in [k for k, c in self._history.items() if now >= c.meta_expires]:
            del self._history[key]
        for published in [k for k, (_, expires) in self._published.items() if now >= expires]:
            del self._published[published]

    def _existing(self, name: str) -> _Channel | None:
        """The channel's history as Redis would hold it now: None once its meta key has expired."""
        now = self._clock()
        self._sweep(now)
        ch = self._history.get(name)
        if ch is None or now >= ch.meta_expires:
            return None
        if now >= ch.history_expires:
            ch.entries.clear()
        return ch

    def _channel(self, name: str, opts: HistoryOptions) -> _Channel:
        ch = self._existing(name)
        if ch is None:
            # A lost history gets a new epoch, exactly as when Redis's meta key expires.
            ch = self._history[name] = _Channel(max(1, opts.size))
        if opts.size and ch.entries.maxlen != opts.size:  # the namespace's size, as Redis's MAXLEN
            ch.entries = deque(ch.entries, maxlen=opts.size)
        return ch
