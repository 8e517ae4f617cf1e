"""presence_stats from counters (app/presence_scripts.py), kept in step by every join, leave and
sweep, against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from app.presence import member_id
from app.presence_redis import RedisPresence
from app.presence_scripts import EXPIRIES, key, users_key
from tests.support import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    found = redis.asyncio.Redis(port=redis_server.port)
    try:
        yield found
    finally:
        await found.aclose()


def member(client: str, user: str) -> str:
    return member_id(client, user, {"bio": "x" * 100})


async def test_stats_follow_joins_and_leaves(client: redis.asyncio.Redis) -> None:
    presence = RedisPresence(client, ttl=30)
    one, two, three, anon = member("c1", "ann"), member("c2", "ann"), member("c3", "bob"), member("c4", "")
    for m in (one, two, three, anon):
        await presence.join("room", m)
    await presence.join("room", one)  # a repeated join is one member still
    assert await presence.stats("room") == {"clients": 4, "users": 2}
    await presence.leave("room", one)
    assert await presence.stats("room") == {"clients": 3, "users": 2}
    await presence.leave("room", two)
    await presence.leave("room", two)  # leaving twice takes nothing more
    assert await presence.stats("room") == {"clients": 2, "users": 1}
    await presence.leave("room", three)
    await presence.leave("room", anon)
    assert await presence.stats("room") == {"clients": 0, "users": 0}
    assert not await client.exists(key("room"), users_key("room"))


async def test_a_dead_instances_members_stop_counting_at_once_and_the_sweep_keeps_counters_right(
    client: redis.asyncio.Redis,
) -> None:
    dead, live = RedisPresence(client, ttl=1), RedisPresence(client, ttl=30)
    await dead.join("room", member("d1", "ann"))
    await dead.join("room", member("d2", "cid"))
    await live.join("room", member("l1", "ann"))
    await live.join("room", member("l2", "bob"))
    assert await live.stats("room") == {"clients": 4, "users": 3}
    # The users key lives as long as the members' set.
    users_ttl, members_ttl = await client.pttl(users_key("room")), await client.pttl(key("room"))
    assert users_ttl > 0
    assert abs(users_ttl - members_ttl) < 100
    await asyncio.sleep(1.2)  # dead's members expire (it never refreshes them); nobody has swept
    assert await live.stats("room") == {"clients": 2, "users": 2}  # cid is gone, ann stays (l1)
    swept = await live.sweep()
    assert [(channel, len(gone), left) for channel, gone, left in swept] == [("room", 2, 2)]
    assert await client.hgetall(users_key("room")) == {b"ann": b"1", b"bob": b"1"}
    assert await live.stats("room") == {"clients": 2, "users": 2}
    # Its next sweep is due when the earliest member left would expire.
    assert await client.zscore(EXPIRIES, "room") == (await client.zrange(key("room"), 0, 0, withscores=True))[0][1]
    await live.close()
    assert not await client.exists(key("room"), users_key("room"))


async def test_a_pass_sweeps_only_the_channels_due(redis_server: RedisServer, client: redis.asyncio.Redis) -> None:
    live, dead = RedisPresence(client, ttl=30), RedisPresence(client, ttl=1)
    for n in range(200):
        await live.join(f"idle:{n}", member(f"c{n}", ""))
    await dead.join("gone", member("d", "dee"))
    await asyncio.sleep(1.2)
    before = redis_server.client().info("commandstats")
    swept = await live.sweep()
    after = redis_server.client().info("commandstats")
    assert [(channel, left) for channel, _, left in swept] == [("gone", 0)]
    sweeps = after["cmdstat_zcard"]["calls"] - before.get("cmdstat_zcard", {}).get("calls", 0)
    assert sweeps == 1  # the due channel, not the 200 idle ones
    assert await client.zscore(EXPIRIES, "gone") is None
    assert await client.zcard(EXPIRIES) == 200


async def test_a_leave_during_a_refresh_round_is_not_undone(client: redis.asyncio.Redis) -> None:
    presence = RedisPresence(client, ttl=30)
    done = asyncio.Event()

    async def refreshing() -> None:
        while not done.is_set():
            await presence._refresh()
            await asyncio.sleep(0)  # a round with nothing to refresh awaits nothing

    task = asyncio.create_task(refreshing())
    await presence.join("stays", member("s", "sam"))
    for n in range(300):
        await presence.join(f"brief:{n}", member(f"b{n}", "bea"))
        await presence.leave(f"brief:{n}", member(f"b{n}", "bea"))
    done.set()
    await task
    assert await client.keys(f"{key('brief:')[:-2]}*") == []  # no member put back after its leave
    assert await presence.stats("stays") == {"clients": 1, "users": 1}


async def test_a_sweep_reports_how_far_behind_it_is(client: redis.asyncio.Redis) -> None:
    """The lag gauge: how long ago the oldest channel due was due (an emptied channel's 0 is not an
    expiry); after the pass has caught up, 0."""
    presence = RedisPresence(client, ttl=30)
    seconds, _ = await client.time()
    await client.zadd(key("late"), {member("l", "lou"): seconds - 60})  # its instance died a minute ago
    await client.zadd(EXPIRIES, {"late": seconds - 60, "emptied": 0})
    swept = await presence.sweep()
    assert [(channel, len(gone)) for channel, gone, _ in swept] == [("late", 1)]
    lag = REGISTRY.get_sample_value("switchboard_presence_sweep_lag_seconds")
    assert lag is not None
    assert 59 <= lag < 70
    assert await presence.sweep() == []
    assert REGISTRY.get_sample_value("switchboard_presence_sweep_lag_seconds") == 0
