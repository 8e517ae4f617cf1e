"""centrifuge-python 0.7 (PyPI, pinned), unchanged, in its Protobuf mode (``use_protobuf=True``:
the ``centrifuge-protobuf`` subprotocol) against real ``python -m app`` processes and Redis.

In Protobuf the SDK's payloads are bytes: here a JSON document's bytes, as Switchboard's channels
hold JSON (docs/sdks.md). The JSON mode is test_centrifuge_python.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from centrifuge import (
    Client,
    ClientEventHandler,
    DeltaType,
    DisconnectedContext,
    ServerPublicationContext,
    ServerSubscribedContext,
)
from centrifuge.exceptions import ReplyError

from tests.sdk import sdk_support
from tests.sdk.raw_client import Client as RawClient
from tests.sdk.raw_client import pb_replies
from tests.sdk.sdk_support import NAMESPACES, PROTOBUF_ENV, api, connected, instance, subscribed, token, until, url
from tests.support import AppProcess, recv_until, ws_connect

# A namespace that allows deltas (docs/sdks.md#delta-compression): in Protobuf they are never negotiated.
DELTA_NAMESPACE = """
[namespaces.dash]
history_size = 100
history_ttl = 3600
allowed_delta_types = ["fossil"]
"""


def doc(value: Any) -> bytes:
    return orjson.dumps(value)


class Events(sdk_support.Events):
    def decode(self, data: Any) -> Any:
        return orjson.loads(data)


class ClientEvents(ClientEventHandler):
    """The connection's own events: server-side subscriptions, ``send`` messages, disconnects."""

    def __init__(self) -> None:
        self.subscribed: list[tuple[str, bool]] = []
        self.data: list[tuple[str, Any, int]] = []
        self.disconnects: list[int] = []

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.subscribed.append((ctx.channel, ctx.recoverable))

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.data.append((ctx.channel, orjson.loads(ctx.pub.data), ctx.pub.offset))

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnects.append(ctx.code)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    workdir = tmp_path_factory.mktemp("centrifuge-python-protobuf")
    with instance(workdir, NAMESPACES + DELTA_NAMESPACE, PROTOBUF_ENV, "sdk-python-pb") as found:
        yield found


def client(app: AppProcess, **options: Any) -> Client:
    return Client(url(app), use_protobuf=True, **options)


async def test_publish_presence_history_join_leave_and_rpc(app: AppProcess) -> None:
    one, two = client(app), client(app, token=token("pb-bob"))  # without a token, and with one
    await one.connect()
    await two.connect()
    await one.ready(5)
    await two.ready(5)
    first, second = Events(), Events()
    sub = await subscribed(one, "chat:pb", first, join_leave=True)
    await subscribed(two, "chat:pb", second, join_leave=True)
    await until(lambda: len(first.joins) == 2, "the join pushes (its own, then bob's)")
    await sub.publish(doc({"text": "hi"}))
    await until(lambda: first.data and second.data, "the publication on both")
    assert first.data == second.data == [{"text": "hi"}]
    assert first.offsets == [1]
    presence = await sub.presence()
    assert {info.user for info in presence.clients.values()} == {"", "pb-bob"}
    stats = await sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 2)  # bob, and the anonymous connection as a user
    history = await sub.history(limit=-1)
    assert [orjson.loads(p.data) for p in history.publications] == [{"text": "hi"}]
    assert history.offset == 1
    answer = await one.rpc("echo.it", doc({"a": 1}))
    assert orjson.loads(answer.data) == {"method": "echo.it", "echo": {"a": 1}, "user": ""}
    with pytest.raises(ReplyError) as denied:
        await one.rpc("hook.deny", doc({}))
    assert denied.value.code == 103
    with pytest.raises(ReplyError) as not_json:  # Switchboard's channels hold JSON documents
        await sub.publish(b"\xff not json")
    assert not_json.value.code == 107
    await two.disconnect()
    await until(lambda: first.leaves, "a leave push")
    assert first.leaves == first.joins[1:]
    await one.disconnect()


async def test_a_subscription_token_grants_its_channel(app: AppProcess) -> None:
    """(This SDK has no handler for ``send``'s message push: the Node scenario and
    test_centrifuge_bad_input.py cover it in Protobuf.)"""
    conn = await connected(client(app, token=token("pb-erin")))
    seen = Events()
    await subscribed(conn, "team:pb", seen, token=token("pb-erin", channel="team:pb"))
    api(app, "publish", {"channel": "team:pb", "data": {"from": "api"}})
    await until(lambda: seen.data, "the publication")
    assert seen.data == [{"from": "api"}]
    await conn.disconnect()


async def test_the_sdk_refreshes_its_token_before_the_connection_expires(app: AppProcess) -> None:
    issued: list[str] = []

    async def get_token() -> str:
        issued.append(token("pb-frank", ttl=2))
        return issued[-1]

    events = ClientEvents()
    conn = await connected(client(app, get_token=get_token, events=events))
    await until(lambda: len(issued) >= 3, "two refreshes", timeout=10)
    assert conn.state.value == "connected"
    assert events.disconnects == []  # past the first token's expiry, on the same connection
    await conn.disconnect()


async def test_recovery_after_a_reconnect_delivers_what_was_missed_once(app: AppProcess) -> None:
    conn = await connected(client(app, token=token("pb-gina"), min_reconnect_delay=1.0, max_reconnect_delay=1.0))
    seen = Events()
    await subscribed(conn, "chat:pbrecover", seen, recoverable=True)
    api(app, "publish", {"channel": "chat:pbrecover", "data": 1})
    await until(lambda: seen.data == [1], "the first publication")
    api(app, "disconnect", {"user": "pb-gina", "code": 4100, "reason": "reconnect"})
    await until(lambda: conn.state.value != "connected", "the disconnect")
    api(app, "publish", {"channel": "chat:pbrecover", "data": 2})
    api(app, "publish", {"channel": "chat:pbrecover", "data": 3})
    await until(lambda: len(seen.subscribed) == 2, "the resubscribe", timeout=10)
    await until(lambda: seen.data == [1, 2, 3], "the missed publications")
    assert (seen.subscribed[1].was_recovering, seen.subscribed[1].recovered) == (True, True)
    assert seen.offsets == [1, 2, 3]
    await conn.disconnect()


async def test_server_side_subscribe_push_and_interop_with_ws(app: AppProcess) -> None:
    events = ClientEvents()
    conn = await connected(client(app, token=token("pb-hal"), events=events))
    api(app, "subscribe", {"user": "pb-hal", "channel": "chat:pbserver"})
    await until(lambda: events.subscribed, "the server-side subscribe push")
    assert events.subscribed == [("chat:pbserver", True)]
    async with ws_connect(app.ws("/ws")) as ws:
        await ws.send('{"id":1,"op":"connect"}')
        await recv_until(ws, lambda f: f.get("id") == 1)
        await ws.send('{"id":2,"op":"subscribe","channel":"chat:pbserver"}')
        await recv_until(ws, lambda f: f.get("id") == 2)
        publish = {"id": 3, "op": "publish", "channel": "chat:pbserver", "data": {"from": "ws"}}
        await ws.send(orjson.dumps(publish).decode())
        await recv_until(ws, lambda f: f.get("id") == 3)  # published: the API's comes after it
        api(app, "publish", {"channel": "chat:pbserver", "data": {"from": "api"}})
        await until(lambda: len(events.data) == 2, "both publications")
    assert events.data == [("chat:pbserver", {"from": "ws"}, 1), ("chat:pbserver", {"from": "api"}, 2)]
    await conn.disconnect()


@pytest.mark.parametrize(
    ("body", "code", "reconnects"),
    [
        ({"code": 4100, "reason": "moved"}, 4100, True),
        ({"code": 4600, "reason": "banned"}, 4600, False),
        ({}, 3503, False),
    ],
)
async def test_disconnect_codes(app: AppProcess, body: dict[str, Any], code: int, reconnects: bool) -> None:
    """The server API's disconnect: 4000-4499 reconnect, 4500-4999 and 3500-3999 stop the SDK."""
    user = f"pb-stop-{code}"
    events = ClientEvents()
    conn = client(app, token=token(user), events=events, min_reconnect_delay=0.2, max_reconnect_delay=0.2)
    connects: list[int] = []
    original = events.on_connected

    async def on_connected(ctx: Any) -> None:
        connects.append(1)
        await original(ctx)

    events.on_connected = on_connected
    await conn.connect()
    await conn.ready(5)
    api(app, "disconnect", {"user": user, **body})
    if reconnects:
        await until(lambda: len(connects) == 2, "the reconnect")
        assert conn.state.value == "connected"
    else:
        await until(lambda: events.disconnects, "the disconnect")
        assert events.disconnects == [code]
        assert conn.state.value == "disconnected"
    await conn.disconnect()


async def test_delta_is_not_negotiated_in_protobuf(app: AppProcess) -> None:
    """The SDK asks for Fossil deltas where the namespace allows them: the reply leaves ``delta``
    out, every publication is full, and the SDK hands over the data as published."""
    raw = await RawClient.connect(app, protobuf=True)
    await raw.send({"id": 2, "subscribe": {"channel": "dash:pb", "delta": "fossil"}})
    assert "delta" not in (await raw.reply(2))["subscribe"]
    conn = await connected(client(app))
    seen = Events()
    await subscribed(conn, "dash:pb", seen, delta=DeltaType.FOSSIL)
    states = [{"state": "x" * 200, "n": n} for n in range(3)]
    for state in states:
        api(app, "publish", {"channel": "dash:pb", "data": state})
    pushes: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(pushes) < len(states):
            pushes += [r["push"]["pub"] for r in await raw.frames() if "pub" in r.get("push", {})]
    assert not any(pub.get("delta") for pub in pushes)
    await until(lambda: len(seen.data) == len(states), "the publications on the SDK")
    assert seen.data == states
    await raw.ws.close()
    await conn.disconnect()


async def test_pings_are_empty_replies_and_a_client_that_does_not_answer_is_closed_3012(app: AppProcess) -> None:
    """(The SDKs' own pongs keep them connected: the refresh tests run for several pings.)"""
    ws = await ws_connect(app.ws("/connection/websocket"), subprotocols=["centrifuge-protobuf"])
    raw = RawClient(ws, protobuf=True)
    await raw.send({"id": 1, "connect": {}})
    [connect] = pb_replies(await ws.recv())
    assert (connect["id"], connect["connect"]["ping"], connect["connect"]["pong"]) == (1, 1, True)
    assert await asyncio.wait_for(ws.recv(), 5) == b"\x00"  # an empty Reply, length-delimited
    assert await raw.closed() == (3012, "no pong")
