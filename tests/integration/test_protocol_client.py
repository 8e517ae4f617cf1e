"""switchboard_client.realtime.Client (the /ws protocol) against real instances: many channels, failover, refresh."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from app.auth import mint_token
from app.config import Settings
from switchboard_client.api import SwitchboardAPI
from switchboard_client.realtime import Client, CommandError
from tests.integration.conftest import start_cluster
from tests.support import TEST_API_KEY, TEST_SECRET, running


def user_token(sub: str, ttl: float = 600) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, sub.title(), ttl)


async def test_each_channel_is_resumed_from_its_own_offset_after_failover(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text('[namespaces.x]\n[namespaces.news]\npublish = "server"\n')
    redis_server, a, b = start_cluster(tmp_path, {"SWITCHBOARD_CONFIG": str(config)})
    try:
        with running(a, b):
            urls = itertools.cycle([a.ws("/ws"), b.ws("/ws")])
            async with (
                Client(lambda: next(urls), token=lambda: user_token("ann"), base_delay=0.05, max_delay=0.2) as client,
                Client(b.ws("/ws")) as publisher,
            ):
                one, two = await client.subscribe("x:one"), await client.subscribe("x:two")
                for channel in ("x:one", "x:two"):  # publish = "subscribers" (the default)
                    await publisher.subscribe(channel)
                with pytest.raises(CommandError) as refused:
                    await publisher.publish("news:a", "only the server")
                assert refused.value.code == 103
                for n in range(3):
                    assert await publisher.publish("x:one", n) == n + 1
                assert await publisher.publish("x:two", "a") == 1
                assert [(await one.get(5)).data for _ in range(3)] == [0, 1, 2]
                assert (await two.get(5)).data == "a"
                a.kill()
                # Published while the client is away; each channel has its own gap.
                for n in range(3, 8):
                    await publisher.publish("x:one", n)
                await publisher.publish("x:two", "b")
                got_one = [(await one.get(10)).data for _ in range(5)]
                got_two = (await two.get(10)).data
                assert got_one == [3, 4, 5, 6, 7]
                assert got_two == "b"
                assert client.connections == 2
                assert one.lost is None
                assert two.lost is None
                await publisher.publish("x:one", "live")
                pub = await one.get(5)
                assert (pub.data, pub.offset) == ("live", 9)
                assert one.position == (9, pub.epoch)
                with pytest.raises(TimeoutError):
                    await one.get(0.3)  # nothing twice
    finally:
        redis_server.stop()


async def test_the_token_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    redis_server, a, _ = start_cluster(tmp_path, {"SWITCHBOARD_REFRESH_GRACE": "1"})
    minted: list[str] = []
    third = asyncio.Event()  # the second refresh: by then the first token is past expiry and grace

    def fresh() -> str:
        minted.append(user_token("ann", ttl=3))
        if len(minted) >= 3:
            third.set()
        return minted[-1]

    try:
        with running(a):
            async with Client(a.ws("/ws"), token=fresh) as client:
                sub = await client.subscribe("x")
                await asyncio.wait_for(third.wait(), 10)  # refreshed twice, never closed
                assert client.connections == 1
                assert len(minted) >= 3
                await client.publish("x", "still here")
                assert (await sub.get(5)).data == "still here"
    finally:
        redis_server.stop()


async def test_a_refused_connect_stops_the_client(tmp_path: Path) -> None:
    redis_server, a, _ = start_cluster(tmp_path, {"SWITCHBOARD_ALLOW_ANONYMOUS": "false"})
    try:
        with running(a):
            client = Client(a.ws("/ws"), base_delay=0.05)
            client.start()
            await asyncio.wait_for(client._stopped.wait(), 10)
            assert client.close_codes == [1008]
            await client.close()
    finally:
        redis_server.stop()


async def test_the_server_api_reaches_the_client(tmp_path: Path) -> None:
    redis_server, a, b = start_cluster(tmp_path)
    try:
        with running(a, b):
            async with (
                Client(a.ws("/ws"), token=user_token("ann")) as client,
                SwitchboardAPI(b.http, TEST_API_KEY) as api,
            ):
                await client.subscribe("mine")  # connected and signed in
                await api.send("ann", {"text": "hello ann"})
                assert await asyncio.wait_for(client.messages.get(), 5) == {"text": "hello ann"}
                await api.subscribe("ann", "assigned")
                assigned = await asyncio.wait_for(client.subscribed("assigned"), 5)
                await api.publish("assigned", "for you")
                assert (await assigned.get(5)).data == "for you"
                await api.unsubscribe("ann", "assigned")
                with pytest.raises(EOFError):
                    await assigned.get(5)
    finally:
        redis_server.stop()


async def test_a_server_disconnect_ends_the_client_for_good(tmp_path: Path) -> None:
    """``disconnect`` ("account suspended") must not be undone by the client reconnecting (4003)."""
    redis_server, a, b = start_cluster(tmp_path)
    try:
        with running(a, b):
            async with (
                Client(a.ws("/ws"), token=user_token("mal"), base_delay=0.01, max_delay=0.05) as client,
                SwitchboardAPI(b.http, TEST_API_KEY) as api,
            ):
                sub = await client.subscribe("news")
                await api.disconnect("mal", reason="account suspended")
                await asyncio.wait_for(client._stopped.wait(), 10)  # _run returned: no reconnect
                assert client.close_codes == [4003]
                assert client.connections == 1
                with pytest.raises(ConnectionError, match="4003"):
                    await sub.get(5)
    finally:
        redis_server.stop()


async def test_the_user_connection_limit_ends_the_client(tmp_path: Path) -> None:
    redis_server, a, _ = start_cluster(tmp_path, {"SWITCHBOARD_USER_CONNECTION_LIMIT": "1"})
    try:
        with running(a):
            async with Client(a.ws("/ws"), token=user_token("max")) as first:
                await first.subscribe("x")  # holds the user's one slot
                second = Client(a.ws("/ws"), token=user_token("max"), base_delay=0.01, max_delay=0.05)
                second.start()
                await asyncio.wait_for(second._stopped.wait(), 10)
                assert second.close_codes == [4004]
                assert second.connections == 1
                await second.close()
    finally:
        redis_server.stop()
