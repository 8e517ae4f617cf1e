"""Graceful drain: on SIGTERM, hand clients to other instances without a thundering herd.

Order: readiness turns 503 and new handshakes are refused with HTTP 503 (a load balancer retries
them elsewhere); then open sockets are closed with 1012 in paced batches spread over the drain
period; then the server's own shutdown runs. The server calls ``begin_all()`` from its
signal handler and ``drain_all()`` from its ``shutdown()``; the app registers in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection
from typing import Protocol

from app.errors import CloseCode

log = logging.getLogger("switchboard.drain")

STEP_SECONDS = 0.1


class Drainer(Protocol):
    def begin(self) -> None:
        """Synchronous and signal-safe: stop taking new sockets now."""

    async def run(self) -> None:
        """Close what is open, paced."""


_drainers: list[Drainer] = []


def register(drainer: Drainer) -> Callable[[], None]:
    _drainers.append(drainer)
    return lambda: _drainers.remove(drainer)


def begin_all() -> None:
    """Called from the signal handler itself: gunicorn signals its workers one after another,
    and a client closed by the first must not reconnect to a sibling that has not noticed yet."""
    for drainer in tuple(_drainers):
        drainer.begin()


async def drain_all() -> None:
    begin_all()
    for drainer in tuple(_drainers):
        try:
            await drainer.run()
        except Exception:
            log.exception("drain failed")


class Closable(Protocol):
    def close(self, code: CloseCode, reason: str | None = None) -> None: ...


class Drainable(Protocol):
    @property
    def connections(self) -> Collection[Closable]: ...

    async def wait_idle(self) -> None: ...


async def close_in_batches(hub: Drainable, seconds: float) -> int:
    """Close every connection with 1012, spread evenly over ``seconds``; returns how many."""
    targets = list(hub.connections)
    if not targets:
        return 0
    steps = max(1, min(len(targets), math.floor(seconds / STEP_SECONDS)))
    per_step = math.ceil(len(targets) / steps)
    pause = seconds / steps
    started = time.monotonic()
    for i in range(0, len(targets), per_step):
        for conn in targets[i : i + per_step]:
            conn.close(CloseCode.SERVICE_RESTART)
        await asyncio.sleep(pause)
    # Wait (bounded) for the sessions to finish, so the server's own shutdown finds none left.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hub.wait_idle(), timeout=2.0)
    log.info("drained %d connections in %.1fs", len(targets), time.monotonic() - started)
    return len(targets)
