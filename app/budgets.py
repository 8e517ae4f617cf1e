"""Per-connection budgets: what one socket may make an instance hold, push or read.

Three bounds of docs/security.md ("What one client can make the cluster do") use these:

* ``TokenBucket`` in bytes: a connection's history budget (``history`` replies and resume
  replays, ``SWITCHBOARD_HISTORY_BYTES_PER_SECOND``/``_BURST``). The size of a read is only known
  once it is done, so a read is allowed while the bucket is not empty and its bytes are then
  spent, possibly into debt: over any window a connection reads at most its burst, plus the rate
  times the window, plus one page.
* ``JoinLeave``: a bucket per channel for one connection's ``join``/``leave`` pushes
  (``SWITCHBOARD_JOIN_LEAVE_BURST``/``_PER_SECOND``). Only joins spend; a leave is pushed exactly
  when its join was, so watchers never see a leave without a join or a member who never left.
* ``CallerRates``: a command bucket per caller of ``POST /command`` (app/streams/commands.py),
  as each socket has one for its frames; at most ``MAX_CALLERS`` kept, the least recent dropped.
* ``InFlight``: the bytes of the commands a ``/ws`` connection has read but not finished
  (``SWITCHBOARD_MAX_IN_FLIGHT_BYTES``), next to their count.

Times are ``time.monotonic()`` seconds, passed in, so the arithmetic is tested without a clock.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic() if now is None else now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` if that many tokens are there; otherwise spend nothing."""
        self._refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def spend(self, amount: float, now: float) -> None:
        """Spend ``amount`` whatever is left: the bucket may go into debt."""
        self._refill(now)
        self.tokens -= amount

    def delay(self, now: float) -> float:
        """Seconds until the bucket holds a positive amount again (0: it does now)."""
        self._refill(now)
        if self.tokens > 0:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return (1e-9 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class JoinLeave:
    """One connection's join/leave pushes: a bucket per channel, and which joins were pushed.

    ``burst`` 0 turns the limit off (every join and leave is pushed). The buckets kept are bounded
    by ``keep``: beyond it, full ones are forgotten first (a full bucket is a fresh one anyway).
    """

    __slots__ = ("_announced", "_buckets", "burst", "keep", "rate")

    def __init__(self, rate: float, burst: int, keep: int) -> None:
        self.rate, self.burst, self.keep = rate, burst, keep
        self._buckets: dict[str, TokenBucket] = {}
        self._announced: set[str] = set()

    def join(self, channel: str, now: float) -> bool:
        """Whether this join is pushed; it spends one of the channel's tokens."""
        if self.burst <= 0:
            self._announced.add(channel)
            return True
        bucket = self._buckets.get(channel)
        if bucket is None:
            self._prune(now)
            bucket = self._buckets[channel] = TokenBucket(self.rate, self.burst, now)
        if not bucket.take(1, now):
            return False
        self._announced.add(channel)
        return True

    def leave(self, channel: str) -> bool:
        """Whether this leave is pushed: exactly when the join it ends was (limit on or off; a
        client that unsubscribes during its replay was never announced)."""
        if channel in self._announced:
            self._announced.discard(channel)
            return True
        return False

    def _prune(self, now: float) -> None:
        if len(self._buckets) < self.keep:
            return
        for name in [name for name, b in self._buckets.items() if b.full(now) and name not in self._announced]:
            del self._buckets[name]
        while len(self._buckets) >= self.keep:  # all busy: forget the oldest (it gets a new burst)
            del self._buckets[next(iter(self._buckets))]


class InFlight:
    """The commands read but not finished on one connection: how many, and their bytes."""

    __slots__ = ("bytes", "count", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count, self.max_bytes = max_count, max_bytes
        self.count = self.bytes = 0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size

    def done(self, size: int) -> None:
        self.count -= 1
        self.bytes -= size

    @property
    def full(self) -> bool:
        """Stop reading: the reader waits for the oldest command (one is always let in)."""
        return self.count >= self.max_count or (self.count > 0 and self.bytes >= self.max_bytes)


MAX_CALLERS = 10_000


class CallerRates:
    """One ``rate``/``burst`` command bucket per caller (a user id, or an anonymous address)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, caller: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(caller, None) or TokenBucket(self.rate, self.burst, now)
        self._buckets[caller] = bucket  # now the most recent
        if len(self._buckets) > MAX_CALLERS:
            self._buckets.popitem(last=False)
        return bucket.take(1, now)
