"""/ws/chat across instances: join notices, cluster-wide online counts, sender exclusion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster, start_cluster
from tests.support import positioned, recv_json, running, send_json, wait_until, ws_connect


@pytest.fixture(autouse=True)
def empty_chat(cluster: Cluster) -> Iterator[None]:
    """Every test starts and ends with nobody in the shared chat channel."""
    cluster.wait_presence("chat", 0)
    yield
    cluster.wait_presence("chat", 0)


def joined(name: str, online: int) -> dict[str, object]:
    return {"type": "system", "message": f"{name} joined the chat", "users_online": online}


async def test_join_message_count_and_leave_across_instances(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws/chat?username=ann")) as ann:
        assert positioned(await recv_json(ann)) == joined("ann", 1)
        async with ws_connect(cluster.b.ws("/ws/chat?username=bob")) as bob:
            assert positioned(await recv_json(bob)) == joined("bob", 2)  # the joiner sees its own notice
            assert positioned(await recv_json(ann)) == joined("bob", 2)
            await send_json(bob, {"content": "hi ann"})
            msg = await recv_json(ann)
            assert (msg["type"], msg["from"], msg["content"]) == ("message", "bob", "hi ann")
            assert isinstance(msg["timestamp"], float)
            # Bob is excluded from his own message: his next frame is Ann's answer.
            await send_json(ann, {"content": "hi bob"})
            answer = await recv_json(bob)
            assert (answer["from"], answer["content"]) == ("ann", "hi bob")
        assert positioned(await recv_json(ann)) == {"type": "system", "message": "bob left the chat", "users_online": 1}


async def test_default_username_is_anonymous(cluster: Cluster) -> None:
    async with ws_connect(cluster.b.ws("/ws/chat")) as ws:
        assert positioned(await recv_json(ws)) == joined("Anonymous", 1)


async def test_counts_are_cluster_wide(cluster: Cluster) -> None:
    sockets = []
    try:
        for i in range(4):
            app = cluster.a if i % 2 == 0 else cluster.b
            ws = await ws_connect(app.ws(f"/ws/chat?username=u{i}"))
            sockets.append(ws)
            assert (await recv_json(ws))["users_online"] == i + 1
    finally:
        for ws in sockets:
            await ws.close()


async def test_killed_instance_members_expire_within_the_ttl(tmp_path: Path) -> None:
    ttl = 1.5
    redis_server, a, b = start_cluster(tmp_path, {"SWITCHBOARD_PRESENCE_TTL": str(ttl)})
    try:
        with running(a, b):
            doomed = [await ws_connect(b.ws(f"/ws/chat?username=d{i}")) for i in range(3)]
            for ws in doomed:
                await recv_json(ws)
            b.kill()  # SIGKILL: no leave messages, no clean-up; only the TTL can remove them.
            survivor = Cluster(redis_server, a, b, tmp_path)
            assert survivor.presence("chat") == 3
            wait_until(lambda: survivor.presence("chat") == 0, ttl + 3, "dead members to expire")
            async with ws_connect(a.ws("/ws/chat?username=late")) as late:
                assert positioned(await recv_json(late)) == joined("late", 1)
            for ws in doomed:
                ws.transport.abort()
    finally:
        redis_server.stop()
