"""Subscriptions that stand on an expiring subscription token, on ``/connection/websocket``.

Centrifugo's SDKs read ``expires``/``ttl`` in the subscribe reply, fetch a new subscription token
(the subscription's ``getToken``) before ``ttl`` runs out and send ``sub_refresh``: the new token,
for the same user and channel, moves the subscription's expiry. One that is not refreshed by its
token's ``exp`` (plus ``SWITCHBOARD_REFRESH_GRACE``, as a connection token gets) is ended with an
``unsubscribe`` push of Centrifugo's code 2501, on which the SDKs subscribe again with a new token.

``/ws`` has no ``sub_refresh``: there a subscription token is checked at subscribe only, as before.
One timer per such subscription, none for the others (idle memory per socket).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

Ended = Callable[[str], Coroutine[Any, Any, None]]


class SubscriptionExpiry:
    """The expiry timers of one connection's token-bound subscriptions."""

    __slots__ = ("_ended", "_expires", "_grace", "_running", "_timers")

    def __init__(self, grace: float, ended: Ended) -> None:
        self._grace = grace
        self._ended = ended  # unsubscribes the channel and tells the client (Session._end)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._expires: dict[str, int] = {}
        # Ends in progress, referenced until done (the event loop keeps only weak references).
        self._running: set[asyncio.Task[None]] = set()

    def watch(self, channel: str, expires: int | None) -> None:
        """Expire ``channel`` at ``expires`` (plus the grace); None: it no longer expires."""
        self.forget(channel)
        if expires is not None:
            self._expires[channel] = expires
            delay = max(0.0, expires - time.time() + self._grace)
            self._timers[channel] = asyncio.get_running_loop().call_later(delay, self._expire, channel)

    def expires(self, channel: str) -> int | None:
        return self._expires.get(channel)

    def forget(self, channel: str) -> None:
        self._expires.pop(channel, None)
        timer = self._timers.pop(channel, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._expires.clear()

    def _expire(self, channel: str) -> None:
        self._timers.pop(channel, None)
        self._expires.pop(channel, None)
        task = asyncio.ensure_future(self._ended(channel))
        self._running.add(task)
        task.add_done_callback(self._running.discard)


def ttl(expires: int | None) -> dict[str, Any]:
    """A subscribe or sub_refresh result's ``expires``/``ttl``: the SDK refreshes ``ttl`` s from now."""
    if expires is None:
        return {}
    return {"expires": True, "ttl": max(1, int(expires - time.time()))}
