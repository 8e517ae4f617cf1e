"""Centrifugo's namespace options, server-side subscriptions at connect and ``sub_refresh``, seen
by centrifuge-python 0.7 (PyPI, unchanged) against a real ``python -m app`` and Redis.

The namespaces (``OPTIONS``): ``chat`` announces joins to those who ask; ``loud`` forces them on
everyone; ``optin`` keeps history but recovers and positions only who asks; ``hist`` keeps history
and presence for its subscribers only, and nobody publishes there but the server; ``personal`` is
the personal channels' namespace; ``feed`` and ``team`` are granted only (a token's claim, a
subscription token)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from centrifuge import (
    Client,
    ClientEventHandler,
    ServerPublicationContext,
    ServerSubscribedContext,
)
from centrifuge.exceptions import ReplyError

from tests.sdk import sdk_support
from tests.sdk.sdk_support import REFRESH_GRACE, Events, api, instance, token, url
from tests.support import API_HEADERS, AppProcess, recv_until, ws_connect

OPTIONS = """
[namespaces.chat]
history_size = 100
join_leave = true

[namespaces.loud]
force_push_join_leave = true

[namespaces.optin]
history_size = 100
force_recovery = false
force_positioning = false

[namespaces.hist]
history_size = 100
allow_history_for_subscriber = true
allow_presence_for_subscriber = false
allow_publish_for_subscriber = false

[namespaces.personal]
subscribe = "granted"
publish = "server"
history_size = 100

[namespaces.feed]
subscribe = "granted"
history_size = 100

[namespaces.team]
subscribe = "granted"
"""


class ServerSide(ClientEventHandler):
    """What a client's server-side subscriptions saw."""

    def __init__(self) -> None:
        self.subscribed: list[ServerSubscribedContext] = []
        self.data: list[tuple[str, Any, int]] = []

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.data.append((ctx.channel, ctx.pub.data, ctx.pub.offset))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    env = {
        "SWITCHBOARD_REFRESH_GRACE": str(REFRESH_GRACE),
        "SWITCHBOARD_PERSONAL_CHANNEL_NAMESPACE": "personal",
    }
    with instance(tmp_path_factory.mktemp("namespace-options"), OPTIONS, env, "ns-options") as found:
        yield found


async def until(predicate: Callable[[], object], what: str, timeout: float = 8) -> None:
    await sdk_support.until(predicate, what, timeout)


async def connected(app: AppProcess, **options: Any) -> Client:
    return await sdk_support.connected(Client(url(app), **options))


async def subscribed(client: Client, channel: str, **options: Any) -> tuple[Any, Events]:
    seen = Events()
    return await sdk_support.subscribed(client, channel, seen, **options), seen


async def refused(call: Any) -> int:
    with pytest.raises(ReplyError) as info:
        await call
    return int(info.value.code)


async def test_the_personal_channel_gets_a_server_api_publish(app: AppProcess) -> None:
    events = ServerSide()
    client = await connected(app, token=token("pat"), events=events)
    await until(lambda: events.subscribed, "the personal channel in the connect reply")
    assert [ctx.channel for ctx in events.subscribed] == ["personal:#pat"]
    api(app, "publish", {"channel": "personal:#pat", "data": {"for": "pat"}})
    await until(lambda: events.data, "the publication")
    assert events.data == [("personal:#pat", {"for": "pat"}, 1)]
    await client.disconnect()
    # An anonymous connection has no personal channel; /ws gets a sub push for it.
    anonymous = ServerSide()
    other = await connected(app, events=anonymous)
    async with ws_connect(app.ws("/ws")) as ws:
        await ws.send(orjson.dumps({"id": 1, "op": "connect", "token": token("pat")}).decode())
        push = await recv_until(ws, lambda f: f.get("op") == "sub")
        assert push["channel"] == "personal:#pat"
    assert anonymous.subscribed == []
    await other.disconnect()


async def test_the_token_channels_are_subscribed_at_connect_and_recovered(app: AppProcess) -> None:
    events = ServerSide()
    channels = ["feed:ivy", "feed:*"]  # a pattern grants; only a name subscribes
    client = await connected(
        app, token=token("ivy", channels=channels), events=events, min_reconnect_delay=1.0, max_reconnect_delay=1.0
    )
    assert sorted(ctx.channel for ctx in events.subscribed) == ["feed:ivy", "personal:#ivy"]
    api(app, "publish", {"channel": "feed:ivy", "data": 1})
    await until(lambda: len(events.data) == 1, "the first publication")
    api(app, "disconnect", {"user": "ivy", "code": 4100, "reason": "reconnect"})
    await until(lambda: client.state.value != "connected", "the disconnect")
    api(app, "publish", {"channel": "feed:ivy", "data": 2})
    api(app, "publish", {"channel": "feed:ivy", "data": 3})
    await until(lambda: len(events.subscribed) == 4, "the server-side subscriptions again", timeout=10)
    await until(lambda: len(events.data) == 3, "the missed publications")
    again = next(ctx for ctx in events.subscribed[2:] if ctx.channel == "feed:ivy")
    assert again.was_recovering is True
    assert again.recovered is True
    assert events.data == [("feed:ivy", 1, 1), ("feed:ivy", 2, 2), ("feed:ivy", 3, 3)]
    await client.disconnect()


async def test_sub_refresh_keeps_a_subscription_past_its_first_token(app: AppProcess) -> None:
    issued: list[str] = []

    async def sub_token(channel: str) -> str:
        issued.append(token("jill", ttl=2, channel=channel))
        return issued[-1]

    client = await connected(app, token=token("jill"))
    sub, seen = await subscribed(client, "team:refresh", get_token=sub_token)
    # Past the first token's expiry and the grace: refreshed twice at least, still subscribed.
    await until(lambda: len(issued) >= 3, "two sub_refresh", timeout=10)
    assert sub.state.value == "subscribed"
    assert len(seen.subscribed) == 1  # never unsubscribed and subscribed again
    api(app, "publish", {"channel": "team:refresh", "data": "still here"})
    await until(lambda: seen.data, "a publication after the refreshes")
    await client.disconnect()


async def test_a_subscription_token_not_refreshed_ends_with_2501(app: AppProcess) -> None:
    async with ws_connect(url(app)) as ws:
        await ws.send(orjson.dumps({"id": 1, "connect": {"token": token("kim")}}).decode())
        await recv_until(ws, lambda f: f.get("id") == 1)
        subscribe = {"channel": "team:short", "token": token("kim", ttl=1, channel="team:short")}
        await ws.send(orjson.dumps({"id": 2, "subscribe": subscribe}).decode())
        reply = await recv_until(ws, lambda f: f.get("id") == 2)
        assert reply["subscribe"]["expires"] is True
        assert 1 <= reply["subscribe"]["ttl"] <= 2
        # A sub_refresh for another channel, or with another user's token, is refused.
        other = {"channel": "team:short", "token": token("lee", channel="team:short")}
        await ws.send(orjson.dumps({"id": 3, "sub_refresh": other}).decode())
        assert (await recv_until(ws, lambda f: f.get("id") == 3))["error"]["code"] == 103
        push = await recv_until(ws, lambda f: "unsubscribe" in f.get("push", {}), timeout=2 + REFRESH_GRACE + 3)
        assert push["push"] == {
            "channel": "team:short",
            "unsubscribe": {"code": 2501, "reason": "subscription expired"},
        }


async def test_history_presence_and_publish_for_subscribers(app: AppProcess) -> None:
    outsider = await connected(app, token=token("out"))
    member = await connected(app, token=token("mem"))
    sub, _ = await subscribed(member, "hist:a")
    api(app, "publish", {"channel": "hist:a", "data": "x"})
    # allow_history_for_subscriber = true: the subscriber reads it, nobody else.
    assert [p.data for p in (await sub.history(limit=-1)).publications] == ["x"]
    assert await refused(outsider.history("hist:a", limit=-1)) == 103
    # Where it is unset, whoever may subscribe reads history (a public namespace: anyone).
    api(app, "publish", {"channel": "chat:open", "data": "y"})
    assert [p.data for p in (await outsider.history("chat:open", limit=-1)).publications] == ["y"]
    # allow_presence_for_subscriber = false and allow_publish_for_subscriber = false (publish = server).
    assert await refused(sub.presence()) == 103
    assert await refused(sub.presence_stats()) == 103
    assert await refused(sub.publish({"no": 1})) == 103
    await outsider.disconnect()
    await member.disconnect()


async def test_forced_recovery_and_positioning_or_only_on_request(app: AppProcess) -> None:
    client = await connected(app)
    _, plain = await subscribed(client, "optin:a")
    _, asked = await subscribed(client, "optin:b", recoverable=True)
    _, forced = await subscribed(client, "chat:forced")
    assert (plain.subscribed[0].recoverable, plain.subscribed[0].positioned) == (False, False)
    assert (asked.subscribed[0].recoverable, asked.subscribed[0].positioned) == (True, True)
    assert (forced.subscribed[0].recoverable, forced.subscribed[0].positioned) == (True, True)
    await client.disconnect()


async def test_join_leave_when_asked_or_forced(app: AppProcess) -> None:
    quiet, asking, forced, joiner = [await connected(app) for _ in range(4)]
    _, unasked = await subscribed(quiet, "chat:jl")
    _, asked = await subscribed(asking, "chat:jl", join_leave=True)
    _, loud = await subscribed(forced, "loud:jl")
    await subscribed(joiner, "chat:jl")
    await subscribed(joiner, "loud:jl")
    arrived = joiner.client_id
    await until(lambda: arrived in asked.joins and arrived in loud.joins, "the joiner's join pushes")
    api(app, "publish", {"channel": "chat:jl", "data": "after the joins"})
    await until(lambda: unasked.data, "the publication after the joins")
    assert unasked.joins == []  # join_leave on the namespace, but this subscriber did not ask
    for client in (quiet, asking, forced, joiner):
        await client.disconnect()


async def test_anonymous_connections_count_as_users_in_presence_stats(app: AppProcess) -> None:
    clients = [await connected(app), await connected(app), await connected(app, token=token("una"))]
    subs = [(await subscribed(client, "chat:stats"))[0] for client in clients]
    stats = await subs[0].presence_stats()
    assert (stats.num_clients, stats.num_users) == (3, 3)
    await clients[0].disconnect()
    await until(lambda: clients[0].state.value == "disconnected", "the disconnect")

    async def counted() -> tuple[int, int]:
        found = await subs[1].presence_stats()
        return found.num_clients, found.num_users

    deadline = asyncio.get_running_loop().time() + 5
    while await counted() != (2, 2):
        assert asyncio.get_running_loop().time() < deadline, await counted()
        await asyncio.sleep(0.05)
    for client in clients[1:]:
        await client.disconnect()


async def test_recovery_from_the_start_history_limits_and_the_version(app: AppProcess) -> None:
    """An empty epoch at offset 0 recovers the whole history (offsets start at 1); history's limit
    0 is the position only, -1 everything; the connect reply names the server's version."""
    for n in (1, 2):
        api(app, "publish", {"channel": "chat:whole", "data": n})
    async with ws_connect(url(app)) as ws:
        await ws.send('{"id":1,"connect":{}}')
        reply = await recv_until(ws, lambda f: f.get("id") == 1)
        assert reply["connect"]["version"].startswith("switchboard ")
        subscribe = {"channel": "chat:whole", "recover": True, "epoch": "", "offset": 0}
        await ws.send(orjson.dumps({"id": 2, "subscribe": subscribe}).decode())
        result = (await recv_until(ws, lambda f: f.get("id") == 2))["subscribe"]
        assert (result["was_recovering"], result["recovered"]) == (True, True)
        assert [(p["offset"], p["data"]) for p in result["publications"]] == [(1, 1), (2, 2)]
        await ws.send('{"id":3,"history":{"channel":"chat:whole","limit":0}}')
        top = (await recv_until(ws, lambda f: f.get("id") == 3))["history"]
        assert (top["publications"], top["offset"], top["epoch"]) == ([], 2, result["epoch"])
        await ws.send('{"id":4,"history":{"channel":"chat:whole","limit":-1}}')
        every = (await recv_until(ws, lambda f: f.get("id") == 4))["history"]
        assert [p["data"] for p in every["publications"]] == [1, 2]


async def test_no_push_of_a_server_side_channel_comes_before_the_connect_reply(app: AppProcess) -> None:
    """Publications keep coming while connections join their server-side channels: each gets its
    connect reply first, then every publication after the reply's offset, in order, none missing."""
    stop = asyncio.Event()

    async def publish() -> None:
        async with httpx.AsyncClient(base_url=app.http, headers=API_HEADERS, timeout=5) as http:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"channel": "feed:busy", "data": n}
                (await http.post("/api/v1/publish", json=body)).raise_for_status()

    publisher = asyncio.create_task(publish())
    try:
        for attempt in range(10):
            connect = {"token": token(f"busy-{attempt}", channels=["feed:busy"])}
            async with ws_connect(url(app)) as ws:
                await ws.send(orjson.dumps({"id": 1, "connect": connect}).decode())
                first = orjson.loads(await ws.recv())
                assert first.get("id") == 1, first  # the reply, before any push
                offset = first["connect"]["subs"]["feed:busy"]["offset"]
                for _ in range(3):
                    push = await recv_until(ws, lambda f: f.get("push", {}).get("channel") == "feed:busy")
                    offset += 1
                    assert push["push"]["pub"]["offset"] == offset
    finally:
        stop.set()
        await publisher


async def test_ws_follows_the_same_namespace_options(app: AppProcess) -> None:
    """/ws: history for subscribers only is 110 to others; no presence for clients is 103, and
    allow_publish_for_subscriber = false is publish = "server" (103)."""
    api(app, "publish", {"channel": "hist:ws", "data": "x"})
    async with ws_connect(app.ws("/ws")) as ws:
        frames: list[dict[str, Any]] = [
            {"op": "connect", "token": token("wes")},
            {"op": "history", "channel": "hist:ws"},
            {"op": "subscribe", "channel": "hist:ws"},
            {"op": "history", "channel": "hist:ws"},
            {"op": "presence_stats", "channel": "hist:ws"},
            {"op": "publish", "channel": "hist:ws", "data": 1},
        ]
        replies: dict[int, Any] = {}
        for n, frame in enumerate(frames, start=1):
            await ws.send(orjson.dumps({"id": n, **frame}).decode())
            replies[n] = await recv_until(ws, lambda f: f.get("id") == len(replies) + 1)
    assert replies[2]["error"]["code"] == 110
    assert [p["data"] for p in replies[4]["publications"]] == ["x"]
    assert replies[5]["error"]["code"] == 103
    assert replies[6]["error"]["code"] == 103
