"""In-process broker: the default for a single instance, not a test double."""

from __future__ import annotations

from app.broker.base import ChannelSource, OnMessage


class MemoryBroker:
    """Delivers synchronously inside ``publish``, so ordering is exactly publish order."""

    def __init__(self) -> None:
        self._on_message: OnMessage | None = None
        self._channels: set[str] = set()

    async def start(self, on_message: OnMessage, channels: ChannelSource) -> None:
        self._on_message = on_message

    async def close(self) -> None:
        self._on_message = None
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, envelope: bytes) -> None:
        if self._on_message is not None and channel in self._channels:
            self._on_message(channel, envelope)

    def healthy(self) -> bool:
        return self._on_message is not None
