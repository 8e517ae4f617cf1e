"""centrifuge-python 0.7 (PyPI, pinned in requirements-dev.txt), unchanged, against real
``python -m app`` processes and Redis: Switchboard's ``/connection/websocket`` is a Centrifugo to it."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from centrifuge import Client

from tests.sdk.sdk_support import (
    NAMESPACES,
    REFRESH_GRACE,
    Events,
    api,
    connected,
    instance,
    subscribed,
    token,
    until,
    url,
)
from tests.support import AppProcess, recv_until, ws_connect


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    env = {"SWITCHBOARD_REFRESH_GRACE": str(REFRESH_GRACE)}
    with instance(tmp_path_factory.mktemp("centrifuge-python"), NAMESPACES, env, "sdk-python") as found:
        yield found


async def test_anonymous_publish_presence_history_and_join_leave(app: AppProcess) -> None:
    one, two = Client(url(app)), Client(url(app), token=token("bob"))
    await one.connect()
    await two.connect()
    await one.ready(5)
    await two.ready(5)
    first, second = Events(), Events()
    sub = await subscribed(one, "chat:py", first, join_leave=True)
    await subscribed(two, "chat:py", second, join_leave=True)
    await until(lambda: len(first.joins) == 2, "the join pushes (its own, then bob's)")
    await sub.publish({"text": "hi"})
    await until(lambda: first.data and second.data, "the publication on both")
    assert first.data == second.data == [{"text": "hi"}]
    assert first.offsets == [1]
    presence = await sub.presence()
    assert {info.user for info in presence.clients.values()} == {"", "bob"}
    stats = await sub.presence_stats()
    assert stats.num_clients == 2
    assert stats.num_users == 2  # bob, and the anonymous connection as a user of its own
    history = await sub.history(limit=-1)
    assert [p.data for p in history.publications] == [{"text": "hi"}]
    assert history.offset == 1
    await two.disconnect()
    await until(lambda: first.leaves, "a leave push")
    assert first.leaves == first.joins[1:]  # bob's connection
    await one.disconnect()


async def test_a_subscription_token_grants_its_channel(app: AppProcess) -> None:
    """(This SDK has no handler for the server API's ``send``: test_centrifuge_js.py covers it.)"""
    client = await connected(Client(url(app), token=token("erin")))
    seen = Events()
    await subscribed(client, "team:red", seen, token=token("erin", channel="team:red"))
    api(app, "publish", {"channel": "team:red", "data": {"from": "api"}})
    await until(lambda: seen.data, "the publication")
    assert seen.data == [{"from": "api"}]
    await client.disconnect()


async def test_the_sdk_refreshes_its_token_before_the_connection_expires(app: AppProcess) -> None:
    issued: list[str] = []

    async def get_token() -> str:
        issued.append(token("frank", ttl=2))
        return issued[-1]

    client = await connected(Client(url(app), get_token=get_token))
    await until(lambda: len(issued) >= 3, "two refreshes", timeout=10)
    # Past the first token's expiry and the grace: still connected, on the same connection.
    assert client.state.value == "connected"
    await client.disconnect()


async def test_recovery_after_a_reconnect_delivers_what_was_missed_once(app: AppProcess) -> None:
    client = await connected(Client(url(app), token=token("gina"), min_reconnect_delay=1.0, max_reconnect_delay=1.0))
    seen = Events()
    await subscribed(client, "chat:recover", seen, recoverable=True)
    api(app, "publish", {"channel": "chat:recover", "data": 1})
    await until(lambda: seen.data == [1], "the first publication")
    api(app, "disconnect", {"user": "gina", "code": 4100, "reason": "reconnect"})  # 4000-4499: reconnect
    await until(lambda: client.state.value != "connected", "the disconnect")
    api(app, "publish", {"channel": "chat:recover", "data": 2})
    api(app, "publish", {"channel": "chat:recover", "data": 3})
    await until(lambda: len(seen.subscribed) == 2, "the resubscribe", timeout=10)
    await until(lambda: seen.data == [1, 2, 3], "the missed publications")
    again = seen.subscribed[1]
    assert again.was_recovering is True
    assert again.recovered is True
    assert seen.offsets == [1, 2, 3]
    await client.disconnect()


async def test_interop_with_ws_and_the_server_api(app: AppProcess) -> None:
    client = await connected(Client(url(app)))
    seen = Events()
    sub = await subscribed(client, "chat:mixed", seen)
    async with ws_connect(app.ws("/ws")) as ws:
        await ws.send('{"id":1,"op":"connect"}')
        await recv_until(ws, lambda f: f.get("id") == 1)
        await ws.send('{"id":2,"op":"subscribe","channel":"chat:mixed"}')
        await recv_until(ws, lambda f: f.get("id") == 2)
        await sub.publish({"from": "sdk"})
        got = await recv_until(ws, lambda f: f.get("op") == "pub")
        assert got["data"] == {"from": "sdk"}
        publish = {"id": 3, "op": "publish", "channel": "chat:mixed", "data": {"from": "ws"}}
        await ws.send(orjson.dumps(publish).decode())
        api(app, "publish", {"channel": "chat:mixed", "data": {"from": "api"}})
        await until(lambda: len(seen.data) == 3, "all three publications")
    assert seen.data == [{"from": "sdk"}, {"from": "ws"}, {"from": "api"}]
    await client.disconnect()
