"""/ws when things go wrong: Redis lost and restarted empty, a drain, a stalled reader."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster, start_cluster
from tests.integration.test_slow_consumer import small_buffer_socket
from tests.integration.wsproto import Proto, connected, is_pub
from tests.support import expect_close, running, ws_connect


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own: these tests kill Redis and instances."""
    env = {
        "SWITCHBOARD_DRAIN_SECONDS": "0.5",
        "SWITCHBOARD_SEND_QUEUE_SIZE": "8",
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "100000",
        "SWITCHBOARD_RATE_LIMIT_BURST": "100000",
    }
    redis_server, a, b = start_cluster(tmp_path, env)
    try:
        with running(a, b):
            yield Cluster(redis_server, a, b, tmp_path)
    finally:
        redis_server.stop()


async def until_ok(proto: Proto, op: str, deadline: float = 10, **fields: object) -> dict[str, object]:
    """Retry a command refused with 108 (Redis down) until it succeeds."""
    async with asyncio.timeout(deadline):
        while True:
            reply = await proto.call(op, **fields)
            if reply["ok"]:
                return reply
            assert reply["error"]["code"] == 108, reply
            await asyncio.sleep(0.1)


async def test_redis_down_is_108_and_a_lost_history_is_a_recovered_push(fresh: Cluster) -> None:
    async with connected(fresh.a.ws("/ws")) as reader, connected(fresh.b.ws("/ws")) as writer:
        for proto in (reader, writer):
            await proto.ok("subscribe", channel="x:1")
        first = await writer.ok("publish", channel="x:1", data="before")
        assert (await reader.push(is_pub("x:1")))["data"] == "before"
        fresh.redis.stop()
        refused = await writer.call("publish", channel="x:1", data="while down")
        assert refused["error"]["code"] == 108  # refused, never dropped silently
        assert refused["error"]["outcome"] == "unknown"  # and honest that Redis never confirmed it
        assert await writer.error("subscribe", channel="x:2") == 108
        fresh.redis.start()  # no persistence: every channel's history and epoch are gone
        after = await until_ok(writer, "publish", channel="x:1", data="after")
        assert after["epoch"] != first["epoch"]
        # The reader's instance notices the new epoch and says so once, then delivers from it.
        lost = await reader.push(lambda f: f.get("op") == "recovered", timeout=10)
        assert lost["channel"] == "x:1"
        assert (lost["ok"], lost["reason"]) == (False, "epoch changed")
        pub = await reader.push(is_pub("x:1"), timeout=10)
        assert (pub["data"], pub["epoch"]) == ("after", after["epoch"])
        assert [f for f in await reader.quiet(0.3) if f.get("data") == "while down"] == []


async def test_a_draining_instance_closes_ws_clients_with_1012(fresh: Cluster) -> None:
    async with connected(fresh.a.ws("/ws")) as proto:
        await proto.ok("subscribe", channel="x:drain")
        assert fresh.a.proc is not None
        fresh.a.proc.send_signal(signal.SIGTERM)
        code, _ = await expect_close(proto.ws, timeout=10)
        assert code == 1012


async def test_a_stalled_ws_reader_is_cut_off_with_4000(fresh: Cluster) -> None:
    app = fresh.a
    stalled = await ws_connect(app.ws("/ws"), sock=small_buffer_socket(app.port), max_queue=1)
    stuck = Proto(stalled)
    await stuck.ok("connect")
    await stuck.ok("subscribe", channel="x:firehose")
    async with connected(fresh.b.ws("/ws")) as writer:
        await writer.ok("subscribe", channel="x:firehose")
        for n in range(300):
            await writer.ok("publish", channel="x:firehose", data=[n, "x" * 32_000])
        # The writer's own copies all arrived, in order: nobody waited for the stalled reader.
        assert [p["data"][0] for p in await writer.pubs("x:firehose", 300)] == list(range(300))
    code, _ = await expect_close(stalled, timeout=15)
    assert code == 4000
