"""A small Server-Sent Events reader over httpx streaming, as a script without EventSource would
write one (the WHATWG parsing rules that Switchboard's events use: data, id, comments, retry)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Event:
    data: Any = None  # the parsed JSON of the data lines; None for a comment
    id: str | None = None  # this event's own id line, if it had one
    comment: str | None = None


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """Each dispatched event, and each comment, in order."""
    data: list[str] = []
    event_id: str | None = None
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Event(comment=line[1:].strip())
        elif line == "":
            if data:
                yield Event(orjson.loads("\n".join(data)), event_id)
            data, event_id = [], None
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "id":
                event_id = value


async def next_data(stream: AsyncIterator[Event]) -> Event:
    """The next event with data (comments skipped). The caller holds ``stream``: an abandoned
    generator is closed when collected, and its response (the stream) with it."""
    async for event in stream:
        if event.data is not None:
            return event
    raise AssertionError("the stream ended")


@dataclass
class Reader:
    """An EventSource-like client: reconnects with ``Last-Event-ID`` until stopped, and records
    every publication's ``data.n`` (the tests publish numbers) and every event."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    last_id: str | None = None
    numbers: list[int] = field(default_factory=list)
    seen: list[Any] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> Reader:
        self.task = asyncio.create_task(self.run())
        return self

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=30)) as http:
            while True:
                headers = dict(self.headers)
                if self.last_id is not None:
                    headers["Last-Event-ID"] = self.last_id
                with contextlib.suppress(httpx.HTTPError):
                    async with http.stream("GET", self.url, headers=headers) as response:
                        if response.status_code == 200:
                            self.instances.append(response.headers["x-switchboard-instance"])
                            await self._consume(response)
                await asyncio.sleep(0.2)

    async def _consume(self, response: httpx.Response) -> None:
        async for event in events(response):
            if event.data is None:
                continue
            self.seen.append(event.data)
            if event.data.get("op") == "subscribed":
                self.connected.set()
            if event.data.get("op") == "pub":
                self.numbers.append(event.data["data"]["n"])
            if event.id is not None:
                self.last_id = event.id

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
