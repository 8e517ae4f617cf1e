"""What the outbox tests share: instances that relay, a /ws subscriber that records what it gets,
and the checks that every committed row came once and in order per channel."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import psycopg
from websockets.asyncio.client import ClientConnection

from switchboard_client.outbox import DBAPI_INSERT, encode
from tests.support import ROOT, AppProcess, ws_connect

CONFIG = str(ROOT / "deploy" / "switchboard.toml")  # news:* is public, server-published, with history


def relay_env(redis_url: str, outbox_url: str | None, **extra: str) -> dict[str, str]:
    env = {"SWITCHBOARD_BROKER_URL": redis_url, "SWITCHBOARD_CONFIG": CONFIG, **extra}
    if outbox_url is not None:
        # A fast relay: short back-offs and polls, so that kills and restarts cost little time.
        env |= {
            "SWITCHBOARD_OUTBOX_URL": outbox_url,
            "SWITCHBOARD_OUTBOX_POLL_INTERVAL": "0.2",
            "SWITCHBOARD_OUTBOX_RETRY_MAX": "0.5",
        }
    return env


def instance(name: str, workdir: Path, redis_url: str, outbox_url: str | None, **extra: str) -> AppProcess:
    return AppProcess(name, workdir, relay_env(redis_url, outbox_url, **extra))


class Subscriber:
    """An anonymous /ws client subscribed to some channels, recording ``(offset, data)`` per channel."""

    def __init__(self, url: str, channels: list[str]) -> None:
        self.url, self.channels = url, channels
        self.got: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with ws_connect(self.url) as ws:
            await self._send(ws, {"id": 1, "op": "connect"})
            replies = 0
            for n, channel in enumerate(self.channels, start=2):
                await self._send(ws, {"id": n, "op": "subscribe", "channel": channel})
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("op") == "ping":
                    await self._send(ws, {"op": "pong"})
                elif frame.get("op") == "pub":
                    self.got[frame["channel"]].append((frame["offset"], frame["data"]))
                elif "id" in frame:
                    assert frame.get("ok") is True, frame
                    replies += 1
                    if replies == len(self.channels) + 1:
                        self._ready.set()

    @staticmethod
    async def _send(ws: ClientConnection, frame: dict[str, Any]) -> None:
        await ws.send(orjson.dumps(frame).decode())

    def count(self) -> int:
        return sum(len(v) for v in self.got.values())

    async def wait_for(self, total: int, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.count() < total:  # polled with a deadline: pushes come from another task
            assert asyncio.get_running_loop().time() < deadline, f"{self.count()} of {total} delivered"
            await asyncio.sleep(0.05)


def check_once_in_order(got: dict[str, list[tuple[int, Any]]], sent: dict[str, list[Any]]) -> None:
    """Each channel got exactly what was committed to it, in commit order, at consecutive offsets
    (a duplicate would take an offset of its own)."""
    assert set(got) == set(sent), (sorted(got), sorted(sent))
    for channel, expected in sent.items():
        offsets = [offset for offset, _ in got[channel]]
        data = [item for _, item in got[channel]]
        assert data == expected, f"{channel}: {len(data)} delivered, {len(expected)} committed"
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"{channel}: gaps or repeats"


async def write_rows(url: str, rows: list[tuple[str, Any]], per_transaction: int = 10, pause: float = 0.0) -> None:
    """Commits ``rows`` in order, ``per_transaction`` at a time, with the helper's statement (many
    rows per round trip: the stream tests are about the relay, not the writer)."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for start in range(0, len(rows), per_transaction):
            chunk = rows[start : start + per_transaction]
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(DBAPI_INSERT, [(channel, encode(data), None, None) for channel, data in chunk])
            if pause:
                await asyncio.sleep(pause)


def pending(url: str) -> int:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT count(*) FROM switchboard_outbox").fetchone()
    assert found is not None
    return int(found[0])
