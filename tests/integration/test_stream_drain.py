"""A draining instance tells its streams (SSE and NDJSON) 1012 and ends them within the drain
window; a full instance refuses one more with 503; a stream whose token expires ends with 4002
(it cannot refresh)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import token
from tests.sse import events
from tests.support import AppProcess

DRAIN_SECONDS = 1.0
STREAMS = 6


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppProcess]:
    env = {"SWITCHBOARD_DRAIN_SECONDS": str(DRAIN_SECONDS), "SWITCHBOARD_MAX_CONNECTIONS": str(STREAMS)}
    process = AppProcess("drain", tmp_path, env).start()
    try:
        yield process
    finally:
        process.stop()


async def last_push(http: httpx.AsyncClient, url: str, opened: asyncio.Queue[None]) -> Any:
    """Read a stream to its end; the last push it carried."""
    last: Any = None
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        opened.put_nowait(None)
        if "/sse" in url:
            async for event in events(response):
                last = event.data if event.data is not None else last
        else:
            async for line in response.aiter_lines():
                last = orjson.loads(line)
    return last


async def test_drain_tells_every_stream_1012_and_ends_it_within_the_window(app: AppProcess) -> None:
    assert app.proc is not None
    opened: asyncio.Queue[None] = asyncio.Queue()
    urls = [f"{app.http}/{'sse' if i % 2 else 'stream'}?channel=news:d{i}" for i in range(STREAMS)]
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=20)) as http:
        readers = [asyncio.create_task(last_push(http, url, opened)) for url in urls]
        for _ in urls:
            await asyncio.wait_for(opened.get(), 10)
        # SWITCHBOARD_MAX_CONNECTIONS counts streams: one more is refused, for nginx to retry elsewhere.
        full = await http.get(f"{app.http}/sse?channel=news:more")
        assert (full.status_code, full.json()["error"]["code"]) == (503, 108)
        started = time.monotonic()
        app.proc.send_signal(signal.SIGTERM)
        lasts = await asyncio.wait_for(asyncio.gather(*readers), 10)
        elapsed = time.monotonic() - started
    assert lasts == [{"op": "close", "code": 1012, "reason": "Server restarting, reconnect"}] * STREAMS
    # Spread over the drain window, and not much past it (generous for a loaded machine).
    assert elapsed < DRAIN_SECONDS + 4, elapsed


async def test_a_stream_ends_with_4002_when_its_token_expires(app: AppProcess) -> None:
    url = f"{app.http}/sse?channel=news:expiring&token={token('erin', ttl=2)}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=20)) as http:
        last = await asyncio.wait_for(last_push(http, url, asyncio.Queue()), 15)
    assert last == {"op": "close", "code": 4002, "reason": "Token expired"}
