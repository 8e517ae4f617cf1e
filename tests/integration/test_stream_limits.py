"""A client that opens 1,000 streams at once gets as many as its limits say, and not one more:
``SWITCHBOARD_USER_CONNECTION_LIMIT`` for one user's, ``SWITCHBOARD_MAX_CONNECTIONS`` for the
instance's; every other is refused with its HTTP status and protocol code before it starts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import token
from tests.support import AppProcess

USER_LIMIT = 10
INSTANCE_LIMIT = 40
STREAMS = 1000


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppProcess]:
    env = {
        "SWITCHBOARD_USER_CONNECTION_LIMIT": str(USER_LIMIT),
        "SWITCHBOARD_MAX_CONNECTIONS": str(INSTANCE_LIMIT),
        # The handshake rate is a bound of its own (test_streams.py): out of the way here.
        "SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND": "1000000",
    }
    process = AppProcess("limits", tmp_path, env).start()
    try:
        yield process
    finally:
        process.stop()


async def open_stream(http: httpx.AsyncClient, url: str, headers: dict[str, str], release: asyncio.Event) -> str:
    """``"open"`` for a stream that started (held until ``release``), else ``"<status> <code>"``."""
    async with http.stream("GET", url, headers=headers) as response:
        if response.status_code == 200:
            await release.wait()
            return "open"
        body = await response.aread()
        return f"{response.status_code} {httpx.Response(200, content=body).json()['error']['code']}"


async def test_a_thousand_streams_are_bounded_by_the_user_and_the_instance_limits(app: AppProcess) -> None:
    release = asyncio.Event()
    limits = httpx.Limits(max_connections=2 * STREAMS + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30), limits=limits) as http:
        one_user = {"Authorization": f"Bearer {token('greedy')}"}
        held = [
            asyncio.create_task(open_stream(http, f"{app.http}/sse?channel=news:n{i % 7}", one_user, release))
            for i in range(STREAMS)
        ]
        # Every refusal arrives while the accepted streams stay open.
        async with asyncio.timeout(60):
            while sum(t.done() for t in held) < STREAMS - USER_LIMIT:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        user_results = Counter(t.result() for t in held if t.done())
        assert user_results == Counter({"429 106": STREAMS - USER_LIMIT})
        # Anonymous clients (no per-user limit) fill what the instance has left, and no more.
        anonymous = [
            asyncio.create_task(open_stream(http, f"{app.http}/stream?channel=news:a{i % 7}", {}, release))
            for i in range(STREAMS)
        ]
        room = INSTANCE_LIMIT - USER_LIMIT
        async with asyncio.timeout(60):
            while sum(t.done() for t in anonymous) < STREAMS - room:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert Counter(t.result() for t in anonymous if t.done()) == Counter({"503 108": STREAMS - room})
        # The instance holds exactly its limit, as its gauge says, and one more is still refused.
        metrics = (await http.get(f"{app.http}/metrics")).text
        assert f'switchboard_connections{{endpoint="sse"}} {USER_LIMIT}.0' in metrics
        assert f'switchboard_connections{{endpoint="http_stream"}} {room}.0' in metrics
        extra = await http.get(f"{app.http}/sse?channel=news:more")
        assert (extra.status_code, extra.json()["error"]["code"]) == (503, 108)
        release.set()
        results = await asyncio.wait_for(asyncio.gather(*held, *anonymous), 30)
    assert Counter(results)["open"] == INSTANCE_LIMIT
