"""A small test client for the /ws protocol: commands with ids, replies matched, pushes kept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from tests.support import ws_connect


class Proto:
    """Commands get the next id; frames that are not the awaited reply are kept as pushes.

    Pings are answered with pongs unless ``answer_pings`` is off.
    """

    def __init__(self, ws: ClientConnection, answer_pings: bool = True) -> None:
        self.ws = ws
        self.answer_pings = answer_pings
        self.pushes: list[dict[str, Any]] = []
        self.replies: dict[int, dict[str, Any]] = {}
        self.client_id = ""  # from the connect reply
        self._next = 0

    def next_id(self) -> int:
        self._next += 1
        return self._next

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def _read(self, timeout: float) -> None:
        frame = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if frame.get("op") == "ping" and self.answer_pings:
            await self.send({"op": "pong"})
        if "id" in frame:
            self.replies[frame["id"]] = frame
        else:
            self.pushes.append(frame)

    async def reply(self, cmd_id: int | None, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while cmd_id not in self.replies:
                await self._read(timeout)
        return self.replies.pop(cmd_id)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        cmd_id = self.next_id()
        await self.send({"id": cmd_id, "op": op, **fields})
        return await self.reply(cmd_id)

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        found = await self.call(op, **fields)
        assert found["ok"] is True, found
        return found

    async def error(self, op: str, **fields: Any) -> int:
        """The error code of a command that must fail; checks the reply's shape too."""
        found = await self.call(op, **fields)
        assert found["ok"] is False, found
        assert isinstance(found["error"]["message"], str), found
        code: int = found["error"]["code"]
        return code

    async def push(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """The first kept or arriving push that matches (it is removed from the kept ones)."""
        async with asyncio.timeout(timeout):
            while True:
                for i, frame in enumerate(self.pushes):
                    if predicate(frame):
                        return self.pushes.pop(i)
                await self._read(timeout)

    async def pubs(self, channel: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [await self.push(is_pub(channel), timeout) for _ in range(count)]

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Everything that arrives within ``seconds`` (for asserting that nothing does)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    await self._read(seconds)
        found, self.pushes = self.pushes, []
        return found


def is_pub(channel: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("op") == "pub" and frame.get("channel") == channel


@contextlib.asynccontextmanager
async def connected(url: str, token: str | None = None, **connect: Any) -> AsyncIterator[Proto]:
    """An open, connected /ws client (``connect`` fields such as a query token go in the URL)."""
    async with ws_connect(url, **connect) as ws:
        proto = Proto(ws)
        reply = await proto.call("connect", **({"token": token} if token else {}))
        assert reply["ok"] is True, reply
        proto.client_id = reply["client"]
        yield proto


@contextlib.asynccontextmanager
async def all_connected(*clients: tuple[str, str | None]) -> AsyncIterator[list[Proto]]:
    """Several connected clients, ``(url, token)`` each; all closed at the end."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(connected(url, token)) for url, token in clients]
