"""Every connection's keepalive timers on one event-loop timer.

An idle WebSocket holds a timer for its whole life: uvicorn's protocol-level ping (then its pong
deadline), and on ``/ws`` and ``/connection/websocket`` the protocol's own ping as well. As event
loop timers (``loop.call_later``), each held about 550 bytes (tracemalloc: the handle, uvloop's
timer object and its libuv timer, the bound method, a copy of the context): about 1 KB of a
15 KB idle ``/ws`` socket. Here a timer is one small object in a heap, and the loop has a single
timer armed, for the earliest of them.

A timer fires at its time or up to ``SLACK`` later, never before, so that timers falling due
together share one wake-up. Callbacks run in the loop's thread without a context copy; one that
raises is logged and counted, and the others still run. Keepalives are seconds apart: none of
them needs a finer clock.

gunicorn's master imports this module (through app.server) first: it must not touch app.metrics
at import.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from itertools import count

log = logging.getLogger(__name__)

SLACK = 0.01  # seconds a timer may fire late so that its neighbours fire with it
# The loop's clock stands still during one of its iterations (uvloop caches it): a timer made by a
# callback, due "now", would be due again in the same run, and a callback that renews itself with
# no delay would never let the run end. So every timer is due at least this far ahead.
MIN_DELAY = 0.001


class Timer:
    """What ``Timers.call_later`` returns: ``cancel()``, as an asyncio TimerHandle offers."""

    __slots__ = ("callback",)  # its due time is in the heap's entry, not kept twice

    def __init__(self, callback: Callable[[], object] | None) -> None:
        self.callback = callback

    def cancel(self) -> None:
        # Left in the heap until it falls due (no O(n) removal), holding no callback meanwhile.
        self.callback = None

    def cancelled(self) -> bool:
        return self.callback is None


class Timers:
    """A heap of timers for one event loop, run from one ``call_at`` armed for the earliest."""

    __slots__ = ("_armed", "_armed_at", "_heap", "_seq", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = count()  # ties keep their order, and tuples never compare Timers
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        when = self.loop.time() + max(MIN_DELAY, delay)
        timer = Timer(callback)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        if self._armed is None or when < self._armed_at:
            self._arm(when)
        return timer

    def _arm(self, when: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = when
        self._armed = self.loop.call_at(when + SLACK, self._run)

    def _run(self) -> None:
        self._armed = None
        heap = self._heap
        now = self.loop.time()
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            callback, timer.callback = timer.callback, None
            if callback is None:
                continue
            try:
                callback()
            except Exception:  # one connection's timer must not stop every other one's
                from app import metrics  # not at import: see the module's docstring

                metrics.LISTENER_ERRORS.inc()
                log.exception("a connection timer failed")
        if heap:
            self._arm(heap[0][0])


_current: Timers | None = None


def timers() -> Timers:
    """The running loop's timers (one loop per process in production; tests run many)."""
    global _current
    loop = asyncio.get_running_loop()
    if _current is None or _current.loop is not loop:
        _current = Timers(loop)
    return _current
