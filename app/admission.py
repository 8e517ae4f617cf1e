"""Admission control: how many WebSocket handshakes an instance takes per second.

When an instance dies, its clients all reconnect within a second or two, to the survivors. Each
handshake costs an accept, a token check, joins and history reads; taken all at once they starve
the survivors' own clients. Beyond the rate a handshake gets HTTP 503 with ``Retry-After``: nginx
tries the next instance (``proxy_next_upstream http_503``), and clients back off with jitter, so
the storm is spread over a few seconds instead of landing in one.

An instance under gunicorn is several worker processes, each with its own bucket, sharing one
listening socket. Each worker takes its share (the rate and the burst divided by the number of
workers), so the instance as a whole admits the documented rate, not that many times over. The
kernel hands connections to whichever worker accepts first, so a worker that is handed more than
its share refuses some even while another has room: the instance may admit less than the rate
under skew, never more.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# How many processes share this instance's rate: set by the gunicorn worker (app/server.py)
# before the application is built; 1 under ``python -m app``.
_workers = 1


def set_workers(count: int) -> None:
    global _workers
    _workers = max(1, count)


def workers() -> int:
    return _workers


class HandshakeRate:
    """A token bucket: ``per_second / workers`` handshakes, bursting to one second's worth.

    The burst is at least one token: a bucket under one token would never admit.
    """

    __slots__ = ("_capacity", "_clock", "_last", "_per_second", "_tokens")

    def __init__(self, per_second: float, workers: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_second = per_second / max(1, workers)
        self._capacity = max(1.0, self._per_second)
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()

    def admit(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._per_second)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
