"""switchboard_client.realtime against real instances: delivery, failover with queued sends, terminal refusals."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path

import httpx

from switchboard_client.realtime import SwitchboardClient
from tests.integration.conftest import Cluster, start_cluster, token
from tests.support import API_HEADERS, recv_until, running, send_json, ws_connect


async def test_clients_on_two_instances_receive_each_message_once(cluster: Cluster) -> None:
    url_a, url_b = cluster.a.ws("/ws/global/client-once"), cluster.b.ws("/ws/global/client-once")
    async with SwitchboardClient(url_a) as one, SwitchboardClient(url_b) as two:
        await asyncio.wait_for(asyncio.gather(one.connected.wait(), two.connected.wait()), 10)
        cluster.wait_presence("global:client-once", 2)
        await one.send({"content": "x"})
        await two.send({"content": "y"})
        for client in (one, two):
            got = sorted([(await client.receive(5))["content"], (await client.receive(5))["content"]])
            assert got == ["x", "y"]
        await one.send({"content": "end"})
        for client in (one, two):
            assert (await client.receive(5))["content"] == "end"  # nothing duplicated before it


async def test_failover_to_another_instance_flushes_what_was_queued(tmp_path: Path) -> None:
    redis_server, a, b = start_cluster(tmp_path)
    try:
        with running(a, b):
            urls = itertools.cycle([a.ws("/ws/global/failover"), b.ws("/ws/global/failover")])
            async with (
                SwitchboardClient(lambda: next(urls), base_delay=0.05, max_delay=0.2) as client,
                ws_connect(b.ws("/ws/global/failover")) as watcher,
            ):
                await asyncio.wait_for(client.connected.wait(), 10)
                a.kill()
                await asyncio.wait_for(client.wait_until(lambda c: not c.connected.is_set()), 10)
                await client.send({"content": "sent while away"})  # queued: it is disconnected
                await asyncio.wait_for(client.wait_until(lambda c: c.connections == 2 and c.connected.is_set()), 10)
                assert client.close_codes  # it noticed the loss
                frame = await recv_until(watcher, lambda f: f.get("content") == "sent while away", timeout=10)
                assert frame["channel"] == "failover"
                await send_json(watcher, {"content": "after failover"})
                while (await client.receive(5))["content"] != "after failover":
                    pass
    finally:
        redis_server.stop()


async def test_a_refused_token_stops_without_retrying(cluster: Cluster) -> None:
    async with SwitchboardClient(cluster.a.ws("/ws/secure?token=bad"), base_delay=0.01) as client:
        with contextlib.suppress(EOFError):
            await client.receive(10)
        assert client.close_codes == [1008]
        assert client.terminal
        assert client.connections == 1


async def test_a_server_disconnect_stops_without_retrying(cluster: Cluster) -> None:
    """The server API's ``disconnect`` reaches tutorial sockets too, and the client stays away."""
    url = cluster.a.ws(f"/ws/secure?token={token('suspended-sam')}")
    async with SwitchboardClient(url, base_delay=0.01, max_delay=0.05) as client:
        await asyncio.wait_for(client.connected.wait(), 10)
        httpx.post(
            f"{cluster.b.http}/api/v1/disconnect",
            headers=API_HEADERS,
            json={"user": "suspended-sam", "reason": "account suspended"},
            timeout=5,
        ).raise_for_status()
        await asyncio.wait_for(client._ended.wait(), 10)  # _run returned: no reconnect
        assert client.close_codes == [4003]
        assert client.terminal
        assert client.connections == 1


async def test_a_client_resumes_across_restarts_through_the_first_message(cluster: Cluster) -> None:
    channel = "client-first"
    tokens = itertools.count()
    issued: list[str] = []

    def fresh_token() -> str:
        issued.append(token(f"svc-{next(tokens)}"))
        return issued[-1]

    url = cluster.a.ws(f"/ws/global/{channel}?auth=first")
    async with SwitchboardClient(url, token=fresh_token) as first:
        await asyncio.wait_for(first.connected.wait(), 10)
        assert (await first.receive(5))["type"] == "auth_success"
        cluster.wait_presence(f"global:{channel}", 1)
        await first.send({"content": "before"})
        assert (await first.receive(5))["content"] == "before"
        saved = first.position
    async with SwitchboardClient(cluster.b.ws(f"/ws/global/{channel}")) as other:
        await asyncio.wait_for(other.connected.wait(), 10)
        for n in range(3):
            await other.send({"content": n})
        for n in range(3):
            assert (await other.receive(5))["content"] == n
    # A new process with the saved position: the position goes in the auth message, not the URL.
    async with SwitchboardClient(url, token=fresh_token, position=saved) as again:
        assert (await again.receive(5))["type"] == "auth_success"
        assert [(await again.receive(5))["content"] for _ in range(3)] == [0, 1, 2]
        recovered = await again.receive(5)
        assert (recovered["type"], recovered["ok"], recovered["count"]) == ("recovered", True, 3)
    assert len(issued) == 2  # a fresh token for each connection
