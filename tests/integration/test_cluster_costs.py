"""What one client's channels cost the cluster in Redis calls and CPU: presence sweeps and stats.

Costs are counted, not timed, wherever they can be (Redis's ``INFO commandstats``, CPU seconds of
each process from /proc), so that the bounds hold on a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from app.presence import member_id
from app.presence_redis import RedisPresence
from tests.integration.conftest import Cluster, start_cluster, token
from tests.integration.wsproto import Proto, connected
from tests.support import API_HEADERS, RedisServer, running

pytestmark = pytest.mark.timeout(180)

ANONYMOUS_CAP = 16


@pytest.fixture(scope="module")
def costs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("costs")
    env = {
        # Subscribing 128 channels at once is not what these tests are about.
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "2000",
        "SWITCHBOARD_RATE_LIMIT_BURST": "2000",
        "SWITCHBOARD_MAX_CHANNELS_ANONYMOUS": str(ANONYMOUS_CAP),
    }
    redis_server, a, b = start_cluster(workdir, env)
    try:
        with running(a, b):
            yield Cluster(redis_server, a, b, workdir)
    finally:
        redis_server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def commandstats(server: RedisServer) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = server.client().info("commandstats")
    return found


def calls(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], command: str) -> float:
    name = f"cmdstat_{command}"
    return after.get(name, {}).get("calls", 0) - before.get(name, {}).get("calls", 0)


def usec(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], command: str) -> float:
    name = f"cmdstat_{command}"
    return after.get(name, {}).get("usec", 0) - before.get(name, {}).get("usec", 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (robust however loaded the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def subscribe_all(proto: Proto, channels: list[str]) -> list[dict[str, Any]]:
    """Every subscribe sent at once, then every reply read."""
    ids = []
    for channel in channels:
        cmd_id = proto.next_id()
        ids.append(cmd_id)
        await proto.send({"id": cmd_id, "op": "subscribe", "channel": channel})
    return [await proto.reply(cmd_id, timeout=30) for cmd_id in ids]


# -- presence cursors (finding 13) ----------------------------------------------------------------


@pytest.mark.parametrize("cursor", ["z18446744073709551616", "z99999999999999999999", "z18446744073709551616.3"])
async def test_a_cursor_past_redis_scan_range_is_a_bad_request_on_ws_and_api(costs: Cluster, cursor: str) -> None:
    channel = unique("cursor:")
    async with connected(costs.a.ws("/ws")) as proto:
        await proto.ok("subscribe", channel=channel)
        assert await proto.error("presence", channel=channel, cursor=cursor) == 107
        # The largest cursor Redis accepts is answered, never an error of ours.
        assert (await proto.ok("presence", channel=channel, cursor="z18446744073709551615"))["ok"]
        response = httpx.post(
            f"{costs.b.http}/api/v1/presence",
            json={"channel": channel, "cursor": cursor},
            headers=API_HEADERS,
            timeout=10,
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == 107


# -- the anonymous channel cap (finding 6) ---------------------------------------------------------


async def test_anonymous_connections_hold_at_most_their_own_channel_cap(costs: Cluster) -> None:
    async with connected(costs.a.ws("/ws")) as anonymous, connected(costs.a.ws("/ws"), token("cap")) as user:
        replies = await subscribe_all(anonymous, [unique("cap:") for _ in range(ANONYMOUS_CAP + 4)])
        assert [r["ok"] for r in replies] == [True] * ANONYMOUS_CAP + [False] * 4
        assert replies[-1]["error"] == {
            "code": 106,
            "message": f"at most {ANONYMOUS_CAP} channels per anonymous connection",
        }
        # A signed-in connection keeps SWITCHBOARD_MAX_CHANNELS_PER_CONNECTION.
        replies = await subscribe_all(user, [unique("cap:") for _ in range(ANONYMOUS_CAP + 4)])
        assert all(r["ok"] for r in replies)


# -- presence_stats on a crowded channel (finding 7) ----------------------------------------------

MEMBERS = 5000
USERS = 1250
REPEATS = 150


@pytest.fixture
async def crowd(costs: Cluster) -> AsyncIterator[str]:
    """5,000 members with 2 KB of ``info`` each, joined as another instance would join them."""
    channel = unique("crowd:")
    client = redis.asyncio.Redis(port=costs.redis.port)
    presence = RedisPresence(client, ttl=120)
    info = {"bio": "x" * 2048}
    try:
        for start in range(0, MEMBERS, 500):
            members = [member_id(f"c{n}", f"u{n % USERS}", info) for n in range(start, start + 500)]
            await asyncio.gather(*(presence.join(channel, m) for m in members))
        yield channel
    finally:
        await presence.close()
        await client.aclose()


def assert_no_member_read(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> None:
    # The members are 10 MB: reading them once costs Redis milliseconds; counting, microseconds.
    # (Script time covers the other instances' refreshes and sweeps in the window too.)
    assert usec(before, after, "evalsha") / REPEATS < 500, usec(before, after, "evalsha") / REPEATS
    member_reads = sum(calls(before, after, c) for c in ("zrangebyscore", "zrange", "zscan", "zrangestore"))
    assert member_reads < REPEATS / 3, member_reads  # the sweeper's index reads, not one per call


async def test_presence_stats_counts_without_reading_the_members(costs: Cluster, crowd: str) -> None:
    async with connected(costs.a.ws("/ws")) as proto:
        await proto.ok("subscribe", channel=crowd)
        expected = {"clients": MEMBERS + 1, "users": USERS}  # the anonymous subscriber is a client only
        first = await proto.call("presence_stats", channel=crowd)
        assert {k: first[k] for k in expected} == expected, first
        before = commandstats(costs.redis)
        took = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            await proto.ok("presence_stats", channel=crowd)
            took.append(time.perf_counter() - start)
        after = commandstats(costs.redis)
        print(f"/ws presence_stats on {MEMBERS} members: median {statistics.median(took) * 1000:.2f} ms")
        assert statistics.median(took) < 0.010
        assert_no_member_read(before, after)

        async with httpx.AsyncClient(base_url=costs.b.http, headers=API_HEADERS, timeout=10) as http:
            body = {"channel": crowd}
            assert (await http.post("/api/v1/presence_stats", json=body)).json() == expected
            before = commandstats(costs.redis)
            took = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                (await http.post("/api/v1/presence_stats", json=body)).raise_for_status()
                took.append(time.perf_counter() - start)
            after = commandstats(costs.redis)
        print(f"API presence_stats on {MEMBERS} members: median {statistics.median(took) * 1000:.2f} ms")
        assert statistics.median(took) < 0.010
        assert_no_member_read(before, after)


# -- idle channels and the sweeper (finding 6) -----------------------------------------------------

SOCKETS = 20
CHANNELS = 128
WINDOW = 11.0  # seconds: more than one presence refresh round (SWITCHBOARD_PRESENCE_TTL / 3 = 10)


def total_calls(stats: dict[str, dict[str, float]]) -> float:
    return sum(entry.get("calls", 0) for entry in stats.values())


async def test_idle_channels_cost_no_redis_call_per_channel_per_second(costs: Cluster) -> None:
    """20 signed-in sockets x 128 unique channels, then nothing: the sweeper reads its index once a
    pass instead of sweeping 2,560 channels a second, and no instance spends 5% of a core."""
    tokens = [token(f"idle{n}") for n in range(SOCKETS)]
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connected(costs.a.ws("/ws"), t)) for t in tokens]
        replies = await asyncio.gather(*(subscribe_all(s, [unique("idle:") for _ in range(CHANNELS)]) for s in sockets))
        assert all(r["ok"] for batch in replies for r in batch)
        pids = {"a": costs.a.proc.pid, "b": costs.b.proc.pid, "redis": costs.redis.proc.pid}  # type: ignore[union-attr]
        before, cpu_before, start = (
            commandstats(costs.redis),
            {k: cpu_seconds(p) for k, p in pids.items()},
            time.monotonic(),
        )
        await asyncio.gather(*(s.quiet(WINDOW) for s in sockets))  # answering pings, nothing else
        after, elapsed = commandstats(costs.redis), time.monotonic() - start
        cpu = {k: (cpu_seconds(p) - cpu_before[k]) / elapsed for k, p in pids.items()}
    sweeps = calls(before, after, "zcard")  # one per channel swept (the sweep script's ZCARD)
    per_second = total_calls(after) - total_calls(before)
    print(
        f"{SOCKETS * CHANNELS} idle channels over {elapsed:.1f} s: {sweeps:.0f} channel sweeps, "
        f"{per_second / elapsed:.0f} Redis calls/s, CPU {', '.join(f'{k} {v:.1%}' for k, v in cpu.items())}"
    )
    assert sweeps <= 10, sweeps  # was one per channel per second: 28,000 here
    assert cpu["a"] < 0.05, cpu
    assert cpu["b"] < 0.05, cpu
