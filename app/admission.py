"""Admission control: how many WebSocket handshakes an instance takes per second.

When an instance dies, its clients all reconnect within a second or two, to the survivors. Each
handshake costs an accept, a token check, joins and history reads; taken all at once they starve
the survivors' own clients. Beyond the rate a handshake gets HTTP 503 with ``Retry-After``: nginx
tries the next instance (``proxy_next_upstream http_503``), and clients back off with jitter, so
the storm is spread over a few seconds instead of landing in one.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class HandshakeRate:
    """A token bucket: ``per_second`` handshakes, bursting to one second's worth."""

    __slots__ = ("_clock", "_last", "_per_second", "_tokens")

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_second = per_second
        self._tokens = per_second
        self._clock = clock
        self._last = clock()

    def admit(self) -> bool:
        now = self._clock()
        self._tokens = min(self._per_second, self._tokens + (now - self._last) * self._per_second)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
