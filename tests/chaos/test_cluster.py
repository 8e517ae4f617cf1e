"""Redis Cluster: sharded pub/sub across three primaries, and a primary killed mid-stream.

Real processes: a 3-primary cluster (with a replica each where a failover is needed; see
tests/redis_ha.py), two app instances on ``redis+cluster://``, the package's resuming clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.broker.scripts import history_keys, idempotency_key
from app.presence_scripts import key as presence_key
from app.presence_scripts import users_key
from tests.chaos.stream import (
    Subscriber,
    all_connected,
    arrivals_after,
    assert_whole_or_told,
    close_all,
    publish_keyed,
    report,
    subscribe,
    wait_for_numbers,
)
from tests.redis_ha import ClusterSet
from tests.support import (
    API_HEADERS,
    AppProcess,
    RedisServer,
    eventually,
    expect_close,
    recv_json,
    running,
    wait_until,
    ws_connect,
)

MESSAGES = 300
EXPECTED = range(1, MESSAGES + 1)
RATE = 30.0  # 10 s of stream; a replica takes over in about 4 s


def channels_on_every_shard(cluster: ClusterSet, per_shard: int) -> dict[int, list[str]]:
    """Channel names (global:...) grouped by the port of the primary that owns each."""
    found: dict[int, list[str]] = {n.port: [] for n in cluster.primaries()}
    n = 0
    while any(len(names) < per_shard for names in found.values()):
        name = f"spread-{n}"
        owner = cluster.owner(f"global:{name}").port
        if len(found[owner]) < per_shard:
            found[owner].append(name)
        n += 1
    return found


def members(app: AppProcess, channel: str) -> int:
    response = httpx.get(f"{app.http}/api/presence/{channel}", headers=API_HEADERS, timeout=5)
    count: int = response.json()["members"]
    return count


def shard_subscribers(node: RedisServer, channel: str) -> int:
    client = redis.Redis(port=node.port, socket_timeout=2)
    try:
        return int(client.pubsub_shardnumsub(channel)[0][1])
    finally:
        client.close()


def wait_joined(app: AppProcess, names: list[str], expected: int) -> None:
    for name in names:
        wait_until(lambda: members(app, f"global:{name}") == expected, 10, f"{name} joined")  # noqa: B023


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    cluster = ClusterSet(tmp_path_factory.mktemp("cluster"), replicas=0).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_channels_history_keys_and_its_sharded_publish_share_one_slot(plain_cluster: ClusterSet) -> None:
    client = redis.Redis(port=plain_cluster.nodes[0].port, socket_timeout=2)
    try:
        for channel in ("chat", "room:42", "global:news", "ns:#alice,bob", "x.y-z~@w"):
            slots = {
                int(client.cluster("KEYSLOT", name))
                for name in (
                    channel,
                    *history_keys(channel),
                    idempotency_key(channel, "k"),
                    presence_key(channel),
                    users_key(channel),
                )
            }
            assert len(slots) == 1, (channel, slots)
    finally:
        client.close()


async def test_delivery_across_instances_on_channels_of_every_shard(plain_cluster: ClusterSet, tmp_path: Path) -> None:
    env = {"SWITCHBOARD_BROKER_URL": plain_cluster.url}
    apps = [AppProcess("a", tmp_path, env), AppProcess("b", tmp_path, env)]
    spread = channels_on_every_shard(plain_cluster, 2)
    names = [name for group in spread.values() for name in group]
    with running(*apps):
        subs = [subscribe(f"{app.name}-{name}", app.ws(f"/ws/global/{name}")) for app in apps for name in names]
        try:
            await all_connected(subs)
            wait_joined(apps[0], names, 2)
            async with httpx.AsyncClient(headers=API_HEADERS, timeout=5) as http:
                # The server API's cluster-wide views, with channels on every shard.
                listed = (await http.post(f"{apps[1].http}/api/v1/channels", json={"prefix": "global:spread-"})).json()
                assert {(c["channel"], c["clients"]) for c in listed["channels"]} == {(f"global:{n}", 2) for n in names}
                for name in names:
                    found = (
                        await http.post(f"{apps[1].http}/api/v1/presence", json={"channel": f"global:{name}"})
                    ).json()
                    assert len(found["clients"]) == 2
                info = (await http.post(f"{apps[0].http}/api/v1/info", json={})).json()
                assert sorted(i["id"] for i in info["instances"]) == ["a", "b"]
                for n in range(1, 11):
                    for i, name in enumerate(names):
                        response = await http.post(f"{apps[i % 2].http}/api/global/{name}", json={"content": {"n": n}})
                        assert response.status_code == 202, response.text
            expected = range(1, 11)
            await wait_for_numbers(subs, expected, 15)
            report(f"sharded delivery over {len(spread)} primaries", subs, expected, channels=len(names))
        finally:
            await close_all(subs)
        for sub in subs:
            assert sub.numbers == list(expected), sub.explain(expected)
        # One pub/sub connection per shard per process, whatever the number of channels and sockets.
        for node in plain_cluster.primaries():
            client = redis.Redis(port=node.port, socket_timeout=2, decode_responses=True)
            try:
                readers = [c["name"] for c in client.client_list() if c["name"].startswith("sb-sub:")]
            finally:
                client.close()
            assert sorted(readers) == ["sb-sub:a", "sb-sub:b"], (node.port, readers)


@pytest.mark.timeout(180)
async def test_a_slot_moved_mid_stream_moves_its_readers_without_loss(
    plain_cluster: ClusterSet, tmp_path: Path
) -> None:
    env = {"SWITCHBOARD_BROKER_URL": plain_cluster.url}
    apps = [AppProcess("m1", tmp_path, env), AppProcess("m2", tmp_path, env)]
    name = "moving"
    with running(*apps):
        subs = [subscribe(f"{i}", apps[i % 2].ws(f"/ws/global/{name}")) for i in range(10)]
        try:
            await all_connected(subs)
            wait_joined(apps[0], [name], 10)
            published_at: dict[int, float] = {}
            publisher = asyncio.create_task(publish_keyed(apps, [f"global:{name}"], EXPECTED, RATE, published_at))
            await eventually(lambda: len(published_at) >= MESSAGES // 3, 60, "a third of the stream")
            before = plain_cluster.owner(f"global:{name}")
            target = next(n for n in plain_cluster.primaries() if n.port != before.port)
            await asyncio.to_thread(plain_cluster.migrate, f"global:{name}", target)
            refused = await publisher
            expected = EXPECTED
            await wait_for_numbers(subs, expected, 30)
            report("a channel's slot migrated mid-stream", subs, expected, refused_publishes=refused)
            assert plain_cluster.owner(f"global:{name}").port == target.port
            # Each instance's reader followed the slot: subscribed on the new owner, not the old.
            assert [shard_subscribers(node, f"global:{name}") for node in (before, target)] == [0, 2]
        finally:
            await close_all(subs)
    for sub in subs:
        assert sub.numbers == list(expected), sub.explain(expected)


def test_an_instance_started_before_its_cluster_is_unready_until_it_appears(tmp_path: Path) -> None:
    cluster = ClusterSet(tmp_path / "late", replicas=0)  # ports chosen, nothing started yet
    app = AppProcess("early", tmp_path, {"SWITCHBOARD_BROKER_URL": cluster.url})
    try:
        app.start()
        assert httpx.get(f"{app.http}/readyz").status_code == 503
        cluster.start()
        try:
            wait_until(lambda: httpx.get(f"{app.http}/readyz").status_code == 200, 30, "ready once the cluster is up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{httpx.get(f'{app.http}/readyz').text}\n{app.log_text()[-4000:]}") from None
    finally:
        app.stop()
        cluster.stop()


async def test_a_shard_lost_for_good_fails_only_its_own_channels(tmp_path: Path) -> None:
    cluster = ClusterSet(tmp_path / "lossy", replicas=0, extra=["--cluster-require-full-coverage", "no"]).start()
    try:
        spread = channels_on_every_shard(cluster, 1)
        (lost_port, (lost,)), (_, (kept,)) = list(spread.items())[:2]
        with running(AppProcess("a", tmp_path, {"SWITCHBOARD_BROKER_URL": cluster.url})) as (app,):
            next(n for n in cluster.nodes if n.port == lost_port).stop(9)
            wait_until(lambda: httpx.get(f"{app.http}/readyz").status_code == 503, 10, "the lost shard noticed")
            async with ws_connect(app.ws(f"/ws/global/{lost}")) as ws:
                code, _ = await expect_close(ws)
            assert code == 1013  # try again later: its shard is gone
            async with ws_connect(app.ws(f"/ws/global/{kept}")) as ws:
                wait_until(lambda: members(app, f"global:{kept}") == 1, 10, "joined on a live shard")
                response = httpx.post(
                    f"{app.http}/api/global/{kept}", json={"content": "still here"}, headers=API_HEADERS
                )
                assert response.status_code == 202
                assert (await recv_json(ws))["content"] == "still here"
    finally:
        cluster.stop()


@pytest.mark.timeout(240)
async def test_a_primary_killed_mid_stream_fails_over_without_silent_loss(tmp_path: Path) -> None:
    cluster = ClusterSet(tmp_path / "ha", replicas=1).start()
    try:
        env = {"SWITCHBOARD_BROKER_URL": cluster.url}
        apps = [AppProcess("a", tmp_path, env), AppProcess("b", tmp_path, env)]
        spread = channels_on_every_shard(cluster, 1)
        names = [group[0] for group in spread.values()]
        victim_port, victim_channel = next(iter(spread.items()))[0], spread[next(iter(spread))][0]
        with running(*apps):
            subs: list[Subscriber] = [
                subscribe(f"{i}-{name}", apps[i % 2].ws(f"/ws/global/{name}")) for i in range(8) for name in names
            ]
            try:
                await all_connected(subs)
                wait_joined(apps[0], names, 8)
                published_at: dict[int, float] = {}
                channels = [f"global:{name}" for name in names]
                publisher = asyncio.create_task(publish_keyed(apps, channels, EXPECTED, RATE, published_at))
                await eventually(lambda: len(published_at) >= MESSAGES // 3, 60, "a third of the stream")
                victim = next(n for n in cluster.nodes if n.port == victim_port)
                killed_at = time.monotonic()
                victim.stop(9)
                refused = await publisher
                expected = EXPECTED
                await wait_for_numbers(subs, expected, 30)
                on_victim = [s for s in subs if s.name.endswith(victim_channel)]
                arrivals = arrivals_after(on_victim, published_at, killed_at)
                counts = report(
                    "Redis Cluster primary SIGKILLed",
                    subs,
                    expected,
                    refused_publishes=refused,
                    killed_shard_channel=victim_channel,
                    kill_to_first_delivery_on_new_primary_s=round(min(arrivals), 2),
                    kill_to_every_subscriber_s=round(max(arrivals), 2),
                )
            finally:
                await close_all(subs)
    finally:
        cluster.stop()
    for sub in subs:
        assert_whole_or_told(sub, expected)
    assert counts["subscribers"] == len(subs)
