"""One pub/sub connection and one listener per process, whatever the number of sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from app.broker.redis import RedisBroker
from app.protocol import header
from tests.integration.conftest import Cluster
from tests.support import RedisServer, wait_until, ws_connect

# switchboard:control (the listener's probe), switchboard:users (user commands),
# switchboard:queries (the questions every instance answers, app/cluster_query.py) and the
# process's own switchboard:emulation:<node> (relayed emulation requests, app/protocols/emulation.py)
FIXED = 4


def pubsub_clients(c: Cluster, instance: str) -> list[dict[str, Any]]:
    clients: list[dict[str, Any]] = c.redis.client().client_list()
    return [cl for cl in clients if cl["name"] == f"sb-sub:{instance}"]


def subscriptions(c: Cluster) -> dict[str, list[int]]:
    return {name: [int(cl["sub"]) for cl in pubsub_clients(c, name)] for name in ("a", "b")}


async def test_fifty_sockets_in_ten_channels_share_one_pubsub_connection(cluster: Cluster) -> None:
    sockets = []
    try:
        for i in range(50):
            app = cluster.a if i < 30 else cluster.b
            sockets.append((i % 10, await ws_connect(app.ws(f"/ws/global/load-{i % 10}"))))
        for ch in range(10):
            cluster.wait_presence(f"global:load-{ch}", 5)
        # Each instance: exactly one pub/sub connection, holding its control channels (FIXED),
        # plus its channels.
        assert subscriptions(cluster) == {"a": [FIXED + 10], "b": [FIXED + len({i % 10 for i in range(30, 50)})]}
        for cl in cluster.redis.client().client_list():
            if cl["name"].startswith("sb-pub:"):
                assert cl["sub"] == "0"

        # Channels 0-4 lose every member: both instances unsubscribe from them, nothing else.
        await asyncio.gather(*(ws.close() for ch, ws in sockets if ch < 5))
        expected = {"a": [FIXED + 5], "b": [FIXED + 5]}
        wait_until(lambda: subscriptions(cluster) == expected, 5, "unsubscribe of emptied channels")
    finally:
        await asyncio.gather(*(ws.close() for _, ws in sockets))
    wait_until(lambda: subscriptions(cluster) == {"a": [FIXED], "b": [FIXED]}, 5, "only the fixed channels left")


async def test_the_broker_runs_exactly_one_listener_task(tmp_path: Any) -> None:
    server = RedisServer(tmp_path / "redis").start()
    broker = RedisBroker(server.url, name="solo")
    received: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    def on_message(channel: str, data: bytes) -> None:
        received.append((channel, data))
        arrived.set()

    try:
        await broker.start(on_message, lambda: (), lambda: None)
        for n in range(10):
            await broker.subscribe(f"c{n}")
        listeners = [t for t in asyncio.all_tasks() if t.get_name() == "switchboard-redis-listener"]
        assert len(listeners) == 1
        position = await broker.publish("c3", header(published_at=1.0), b'{"p":1}')
        await asyncio.wait_for(arrived.wait(), 5)
        assert position is not None
        envelope = b'- 1.000000 1 %s\n{"p":1,"offset":1,"epoch":"%s"}' % ((position.epoch.encode(),) * 2)
        assert received == [("c3", envelope)]
    finally:
        await broker.close()
        server.stop()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "switchboard-redis-listener"] == []
