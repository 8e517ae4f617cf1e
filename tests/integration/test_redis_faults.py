"""Redis loss: the listener reconnects and resubscribes by itself; publishes fail loudly meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from app.errors import PUBLISH_FAILED
from tests.integration.conftest import Cluster, start_cluster
from tests.support import (
    content_is,
    expect_close,
    positioned,
    recv_json,
    recv_until,
    running,
    send_json,
    wait_until,
    ws_connect,
)

RECOVERY_DEADLINE = 5.0
_seq = itertools.count()


async def flowing(sender: ClientConnection, receiver: ClientConnection, deadline: float) -> float:
    """Publish numbered probes until one crosses instances; returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        n = next(_seq)
        await send_json(sender, {"content": n})
        try:
            await recv_until(receiver, content_is(n), timeout=0.25)
            return time.monotonic() - started
        except TimeoutError:
            continue
    raise AssertionError(f"messages did not flow again within {deadline}s")


async def two_subscribers(c: Cluster, channel: str) -> tuple[ClientConnection, ClientConnection]:
    sa = await ws_connect(c.a.ws(f"/ws/global/{channel}"))
    sb = await ws_connect(c.b.ws(f"/ws/global/{channel}"))
    c.wait_presence(f"global:{channel}", 2)
    await flowing(sa, sb, RECOVERY_DEADLINE)
    return sa, sb


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own: these tests kill and restart its redis-server."""
    redis_server, a, b = start_cluster(tmp_path)
    try:
        with running(a, b):
            yield Cluster(redis_server, a, b, tmp_path)
    finally:
        redis_server.stop()


async def test_client_kill_of_the_pubsub_connection(fresh: Cluster) -> None:
    sa, sb = await two_subscribers(fresh, "kill")
    killed = fresh.redis.client().client_kill_filter(_type="pubsub")
    assert killed == 2  # one pub/sub connection per instance
    await flowing(sa, sb, RECOVERY_DEADLINE)
    await flowing(sb, sa, RECOVERY_DEADLINE)
    # Resubscribed exactly once each: one marker arrives once, then nothing else.
    await send_json(sa, {"content": "marker"})
    assert positioned(await recv_until(sb, content_is("marker"))) == {"content": "marker", "channel": "kill"}
    await send_json(sb, {"content": "after"})
    assert (await recv_json(sb))["content"] == "after"
    await asyncio.gather(sa.close(), sb.close())


async def test_full_redis_restart(fresh: Cluster) -> None:
    a = fresh.a
    sa, sb = await two_subscribers(fresh, "restart")
    fresh.redis.stop()
    # Publishing while Redis is down: a clear error frame, and the socket stays open.
    await send_json(sa, {"content": "into the void"})
    # (sa also hears its own earlier probes: the global channel includes the sender.)
    error = await recv_until(sa, lambda f: f.get("type") == "error")
    assert error == {"type": "error", "message": PUBLISH_FAILED, "outcome": "unknown"}
    wait_until(lambda: httpx.get(a.http + "/readyz").status_code == 503, 10, "readyz to turn 503")
    assert httpx.get(a.http + "/healthz").status_code == 200  # liveness does not follow Redis
    fresh.redis.start()  # same port, empty data
    took = await flowing(sa, sb, RECOVERY_DEADLINE)
    print(f"messages flowed again {took:.2f}s after redis-server came back")
    wait_until(lambda: httpx.get(a.http + "/readyz").status_code == 200, 5, "readyz to recover")
    await asyncio.gather(sa.close(), sb.close())


async def test_joining_while_redis_is_down_is_refused_with_1013(fresh: Cluster) -> None:
    fresh.redis.stop()
    wait_until(lambda: httpx.get(fresh.a.http + "/readyz").status_code == 503, 10, "readyz to turn 503")
    async with ws_connect(fresh.a.ws("/ws/room/r1")) as ws:
        code, _ = await expect_close(ws)
    assert code == 1013


def ready(app: Any) -> bool:
    return httpx.get(app.http + "/readyz").status_code == 200


async def test_joins_succeed_once_ready_after_a_redis_restart(fresh: Cluster) -> None:
    """Pooled connections go stale with a restart: a join must not fail while /readyz says ready."""

    async def joins(app: Any, n: int) -> list[int | None]:
        async def one(i: int) -> int | None:
            async with ws_connect(app.ws(f"/ws/global/pool-{i}")) as ws:
                await send_json(ws, {"content": "hello"})
                try:
                    await recv_until(ws, lambda f: f.get("content") == "hello", timeout=5)
                    return None
                except ConnectionClosed:
                    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else -1

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    for app in (fresh.a, fresh.b):
        assert await joins(app, 12) == [None] * 12  # fills each instance's connection pool
    fresh.redis.restart()
    for app in (fresh.a, fresh.b):
        wait_until(partial(ready, app), 10, "ready again")
    for app in (fresh.a, fresh.b):
        assert await joins(app, 12) == [None] * 12  # no 1013 once ready
