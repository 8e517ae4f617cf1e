"""Chaos on the Redis side: a killed pub/sub connection, Redis restarts, a history too short.

Real app processes and a real redis-server; each test starts its own, since it breaks them.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx

from tests.chaos.stream import (
    Publisher,
    Subscriber,
    all_connected,
    catch_up_seconds,
    close_all,
    report,
    subscribe,
    wait_for_numbers,
)
from tests.integration.conftest import Cluster, start_cluster
from tests.support import AppProcess, RedisServer, eventually, running

# Stopping an instance drains it; the tests close their clients first, so a short drain is plenty.
FAST_DRAIN = {"SWITCHBOARD_DRAIN_SECONDS": "0.5"}
SUBSCRIBERS = 100
MESSAGES = 1000
RATE = 200.0


def metric(app: AppProcess, name: str) -> float:
    text = httpx.get(app.http + "/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def ready(app: AppProcess) -> bool:
    return httpx.get(app.http + "/readyz", timeout=5).status_code == 200


def split(subs_per_app: int, a: AppProcess, b: AppProcess, channel: str) -> list[Subscriber]:
    return [subscribe(f"s{i}", (a if i % 2 else b).ws(f"/ws/global/{channel}")) for i in range(2 * subs_per_app)]


async def test_client_kill_of_the_pubsub_connection_loses_nothing(tmp_path: Path) -> None:
    redis_server, a, b = start_cluster(tmp_path, FAST_DRAIN)
    channel, expected = "chaos-kill", range(1, MESSAGES + 1)
    subs: list[Subscriber] = []
    try:
        with running(a, b):
            subs = split(SUBSCRIBERS // 2, a, b, channel)
            await all_connected(subs)
            Cluster(redis_server, a, b, tmp_path).wait_presence(f"global:{channel}", SUBSCRIBERS, 15)
            pub = Publisher(lambda: a.http, channel)
            stream = asyncio.create_task(pub.run(expected, RATE))
            await eventually(lambda: len(pub.published_at) >= MESSAGES // 3, 30, "a third published")
            killed_at = time.monotonic()
            assert redis_server.client().client_kill_filter(_type="pubsub") == 2
            await stream
            await wait_for_numbers(subs, expected, 30)
            counts = report(
                "pub/sub connection killed",
                subs,
                expected,
                catch_up_s=round(catch_up_seconds(subs, pub, killed_at), 3),
                hub_catch_ups=sum(metric(x, "switchboard_recoveries_total") for x in (a, b)),
            )
            assert all(metric(x, "switchboard_broker_reconnects_total") >= 1 for x in (a, b))
    finally:
        await close_all(subs)
        redis_server.stop()
    assert counts["lost"] == counts["duplicates"] == counts["out_of_order"] == 0
    # The clients stayed connected: the instances caught up for them.
    assert counts["reconnects"] == counts["recovered_lost"] == 0


async def restart_mid_stream(tmp_path: Path, appendonly: bool) -> tuple[list[Subscriber], Subscriber, range, str]:
    """Stream, restart Redis between two halves, stream on; a resumer is away across the restart."""
    redis_server = RedisServer(tmp_path / "redis", appendonly=appendonly).start()
    env = {"SWITCHBOARD_BROKER_URL": redis_server.url, **FAST_DRAIN}
    a, b = AppProcess("a", tmp_path, env), AppProcess("b", tmp_path, env)
    channel, half = "chaos-restart", 200
    first, second = range(1, half + 1), range(half + 1, 2 * half + 1)
    subs: list[Subscriber] = []
    extras: list[Subscriber] = []
    try:
        with running(a, b):
            subs = split(30, a, b, channel)
            resumer = subscribe("resumer", a.ws(f"/ws/global/{channel}"))
            extras.append(resumer)
            await all_connected([*subs, resumer])
            Cluster(redis_server, a, b, tmp_path).wait_presence(f"global:{channel}", len(subs) + 1, 15)
            pub = Publisher(lambda: a.http, channel)
            await pub.run(first, RATE)
            await wait_for_numbers([*subs, resumer], first, 20)
            await resumer.client.close()  # away across the restart; resumes from its position later
            redis_server.restart()
            restarted_at = time.monotonic()
            await pub.run(second, RATE)
            resumer_again = subscribe("resumer", a.ws(f"/ws/global/{channel}"), position=resumer.client.position)
            extras.append(resumer_again)
            await wait_for_numbers(subs, second, 30)
            await eventually(lambda: resumer_again.recovered, 10, "the resumer's recovered frame")
            if resumer_again.recovered[0]["ok"]:
                await wait_for_numbers([resumer_again], second, 10)
            await eventually(lambda: all(ready(x) for x in (a, b)), 10, "both instances ready")
            counts = report(
                f"redis restarted ({'appendonly' if appendonly else 'no persistence'})",
                subs,
                range(1, 2 * half + 1),
                refused_publishes=pub.refused,
                catch_up_s=round(catch_up_seconds(subs, pub, restarted_at), 3),
                resumer=f"{len(resumer_again.numbers)} messages, {resumer_again.recovered}",
            )
            assert counts["duplicates"] == counts["out_of_order"] == counts["reconnects"] == 0
            return subs, resumer_again, second, resumer.client.position[1] if resumer.client.position else ""
    finally:
        await close_all(subs + extras)
        redis_server.stop()


async def test_redis_restart_without_persistence_tells_every_client_ok_false(tmp_path: Path) -> None:
    subs, resumer, second, old_epoch = await restart_mid_stream(tmp_path, appendonly=False)
    for sub in subs:
        # Told once that history was lost, then every message of the new epoch, in order.
        assert [(r["ok"], r["reason"]) for r in sub.recovered] == [(False, "epoch changed")]
        assert sub.numbers == list(range(1, second.stop))
    assert [(r["ok"], r["reason"]) for r in resumer.recovered] == [(False, "epoch changed")]
    assert resumer.recovered[0]["epoch"] != old_epoch
    assert set(resumer.numbers) <= set(second)


async def test_redis_restart_with_appendonly_recovers_everything(tmp_path: Path) -> None:
    subs, resumer, second, old_epoch = await restart_mid_stream(tmp_path, appendonly=True)
    for sub in subs:
        assert sub.recovered == []
        assert sub.numbers == list(range(1, second.stop))
    # The client that was away gets the whole second half from history, then ok:true.
    assert resumer.recovered[0]["ok"] is True
    assert resumer.recovered[0]["epoch"] == old_epoch
    assert resumer.numbers == list(second)


async def test_a_gap_longer_than_the_history_is_reported_not_skipped(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    app = AppProcess(
        "a", tmp_path, {"SWITCHBOARD_BROKER_URL": redis_server.url, "SWITCHBOARD_HISTORY_SIZE": "20", **FAST_DRAIN}
    )
    channel = "chaos-short"
    subs: list[Subscriber] = []
    try:
        with running(app):
            short = subscribe("short-gap", app.ws(f"/ws/global/{channel}"))
            long = subscribe("long-gap", app.ws(f"/ws/global/{channel}"))
            subs = [short, long]
            await all_connected(subs)
            Cluster(redis_server, app, app, tmp_path).wait_presence(f"global:{channel}", 2, 15)
            pub = Publisher(lambda: app.http, channel)
            await pub.run(range(1, 11), RATE)
            await wait_for_numbers(subs, range(1, 11), 10)
            await long.client.close()
            await pub.run(range(11, 41), RATE)  # 30 missed: more than the 20 kept
            await wait_for_numbers([short], range(11, 41), 10)
            await short.client.close()
            await pub.run(range(41, 51), RATE)  # 10 missed: within the history
            for old in (short, long):
                subs.append(subscribe(old.name, app.ws(f"/ws/global/{channel}"), position=old.client.position))
            await all_connected(subs[2:])
            await pub.run(range(51, 53), RATE)
            await wait_for_numbers(subs[2:], range(51, 53), 10)
            short_again, long_again = subs[2:]
            report("history of 20, 10 missed", [short_again], range(41, 53))
            report("history of 20, 30 missed (after ok:false, live only)", [long_again], range(51, 53))
    finally:
        await close_all(subs)
        redis_server.stop()
    assert [(r["ok"], r.get("count")) for r in short_again.recovered] == [(True, 10)]
    assert short_again.numbers == list(range(41, 53))
    assert [(r["ok"], r.get("reason")) for r in long_again.recovered] == [(False, "history too short")]
    assert long_again.numbers == [51, 52]  # nothing from the gap was passed off as complete
