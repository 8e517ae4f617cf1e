"""A ``/ws`` channel as ``Client`` hands it out: a bounded, iterable stream of publications."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


class CommandError(Exception):
    """The server answered a command with an error (``code`` from the protocol's table)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Publication:
    channel: str
    data: Any
    offset: int
    epoch: str
    info: dict[str, Any] | None


class Owner(Protocol):
    """What a subscription needs of its ``Client``: the client hands itself in, so this module,
    below the protocol's, never imports it."""

    async def unsubscribe(self, channel: str) -> None: ...


class Subscription:
    """One channel: iterate it for publications; ``position`` is where a reconnect resumes."""

    def __init__(self, client: Owner, channel: str, buffer: int) -> None:
        self.client = client
        self.channel = channel
        self.position: tuple[int, str] | None = None
        self.lost: str | None = None  # the reason, when a resume could not recover everything
        self.active = False  # the server confirmed it at least once: reconnects resume it
        self._queue: asyncio.Queue[Publication | BaseException] = asyncio.Queue(maxsize=buffer)

    async def _put(self, item: Publication | BaseException) -> None:
        await self._queue.put(item)  # a full buffer stops reading: backpressure to the socket

    def _moved(self, offset: int, epoch: str) -> None:
        if offset:
            self.position = (offset, epoch)

    async def get(self, timeout: float | None = None) -> Publication:
        async with asyncio.timeout(timeout):
            item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def __aiter__(self) -> AsyncIterator[Publication]:
        while True:
            try:
                yield await self.get()
            except EOFError:
                return

    async def unsubscribe(self) -> None:
        await self.client.unsubscribe(self.channel)
