"""Presence joins batched per channel (app/presence_redis.py), against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from app.broker import BrokerUnavailable
from app.presence_redis import RedisPresence
from app.presence_scripts import key
from tests.support import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def presence(redis_server: RedisServer) -> AsyncIterator[RedisPresence]:
    client = redis.asyncio.Redis(port=redis_server.port)
    presence = RedisPresence(client, ttl=30)
    await presence.start()
    try:
        yield presence
    finally:
        await presence.close()
        await client.aclose()


def script_calls(redis_server: RedisServer) -> int:
    stats = redis_server.client().info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha"))


async def test_a_storm_of_joins_is_one_script_call_per_batch_and_every_member_counts(
    redis_server: RedisServer, presence: RedisPresence
) -> None:
    before = script_calls(redis_server)
    counts = await asyncio.gather(*(presence.join("lobby", f"m{n}") for n in range(300)))
    calls = script_calls(redis_server) - before
    print(f"300 joins: {calls} script calls")
    assert redis_server.client().zcard(key("lobby")) == 300
    assert counts == [300] * 300  # each joiner is told the count with its whole batch in
    assert calls <= 3  # one batch (a NOSCRIPT and its EVAL at most besides), not 300 calls


async def test_joins_arriving_during_a_batch_go_in_the_next(redis_server: RedisServer, presence: RedisPresence) -> None:
    first = asyncio.ensure_future(presence.join("lobby", "early"))
    await asyncio.sleep(0)  # the first batch is under way
    later = [asyncio.ensure_future(presence.join("lobby", f"late{n}")) for n in range(50)]
    assert await first in (1, 51)
    assert set(await asyncio.gather(*later)) == {51}
    assert sorted(await presence.members("lobby")) == sorted(["early", *(f"late{n}" for n in range(50))])


async def test_a_cancelled_joiner_does_not_stay_present(redis_server: RedisServer, presence: RedisPresence) -> None:
    gone = asyncio.ensure_future(presence.join("lobby", "gone"))
    stays = asyncio.ensure_future(presence.join("lobby", "stays"))
    await asyncio.sleep(0)  # both are in the batch
    gone.cancel()
    assert await stays == 2
    deadline = asyncio.get_running_loop().time() + 5
    while await presence.members("lobby") != ["stays"]:
        assert asyncio.get_running_loop().time() < deadline, await presence.members("lobby")
        await asyncio.sleep(0.02)
    assert gone.cancelled()


async def test_every_joiner_of_a_failed_batch_is_told(redis_server: RedisServer, presence: RedisPresence) -> None:
    redis_server.stop()
    results = await asyncio.gather(*(presence.join("lobby", f"m{n}") for n in range(5)), return_exceptions=True)
    assert all(isinstance(r, BrokerUnavailable) for r in results), results
