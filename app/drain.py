"""Graceful drain: on SIGTERM, hand clients to other instances without a thundering herd.

Order: readiness turns 503 and new handshakes are refused with HTTP 503 (a load balancer retries
them elsewhere); then open sockets are closed with 1012 in paced batches spread over the drain
period; then the server's own shutdown runs. The server calls ``drain_all()`` from its
``shutdown()``; the app registers its hook in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from app.errors import CloseCode

log = logging.getLogger("switchboard.drain")

DrainHook = Callable[[], Awaitable[None]]
_hooks: list[DrainHook] = []
STEP_SECONDS = 0.1


def register(hook: DrainHook) -> Callable[[], None]:
    _hooks.append(hook)
    return lambda: _hooks.remove(hook)


async def drain_all() -> None:
    for hook in tuple(_hooks):
        try:
            await hook()
        except Exception:
            log.exception("drain hook failed")


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
