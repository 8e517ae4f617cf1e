"""The broker interface: cross-process pub/sub, chosen by URL scheme."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

OnMessage = Callable[[str, bytes], None]
"""Called by the broker's single listener for every message, in order; must not block."""

ChannelSource = Callable[[], Collection[str]]
"""Returns the channels this process needs; read after a reconnect to resubscribe."""


class BrokerUnavailable(Exception):
    """The broker cannot take this operation now; the caller tells its client and carries on."""


class Broker(Protocol):
    """Cross-process pub/sub.

    Guarantees:
      * Order: messages published on one channel by one process are delivered to every subscriber
        in publish order. Publishes from different processes interleave arbitrarily.
      * Delivery: at-most-once. A message published while a subscriber's broker connection is
        down is lost for that subscriber; switchboard_broker_reconnects_total counts such gaps.
      * ``subscribe`` returns once the broker confirms the subscription, so a message published
        after it returns is delivered (no race on the first subscribe).
      * ``publish`` raises ``BrokerUnavailable`` rather than dropping a message silently.
      * The process's own publishes come back through ``on_message`` like everyone else's:
        local and remote delivery share one path.
    """

    async def start(self, on_message: OnMessage, channels: ChannelSource) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, envelope: bytes) -> None: ...

    def healthy(self) -> bool: ...
