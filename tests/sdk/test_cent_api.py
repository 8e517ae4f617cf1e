"""cent 5.2 (PyPI, Centrifugo's own Python server API client), unchanged, against a real
``python -m app`` and Redis: ``POST /api/<method>`` is a Centrifugo server API to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cent import (
    AsyncClient,
    BroadcastRequest,
    ChannelsRequest,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.dto import Disconnect, StreamPosition
from cent.exceptions import CentApiResponseError, CentTransportError, CentUnauthorizedError
from centrifuge import Client

from app import __version__
from tests.docs_console import Console
from tests.docs_examples import example
from tests.sdk.sdk_support import NAMESPACES, Events, connected, instance, subscribed, token, until, url
from tests.support import (
    API_HEADERS,
    TEST_API_KEY,
    AppProcess,
    expect_close,
    recv_until,
    ws_connect,
)

# Neither history nor presence.
QUIET = """
[namespaces.quiet]
subscribe = "public"
publish = "server"
history_size = 0
presence = false
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    with instance(tmp_path_factory.mktemp("cent"), NAMESPACES + QUIET, {}, "cent") as found:
        yield found


@pytest.fixture
async def cent(app: AppProcess) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(f"{app.http}/api", TEST_API_KEY, timeout=5)
    yield client
    await client._session.close()


async def sdk_subscriber(app: AppProcess, channel: str, user: str) -> tuple[Client, Events]:
    client = await connected(Client(url(app), token=token(user)))
    seen = Events()
    await subscribed(client, channel, seen)
    return client, seen


async def ws_subscriber(app: AppProcess, channel: str, user: str) -> Any:
    ws = await ws_connect(app.ws("/ws"))
    await ws.send(orjson.dumps({"id": 1, "op": "connect", "token": token(user)}).decode())
    await recv_until(ws, lambda f: f.get("id") == 1)
    if channel:
        await ws.send(orjson.dumps({"id": 2, "op": "subscribe", "channel": channel}).decode())
        assert (await recv_until(ws, lambda f: f.get("id") == 2))["ok"] is True
    return ws


async def test_a_cent_publish_reaches_an_sdk_subscriber_and_a_ws_client(app: AppProcess, cent: AsyncClient) -> None:
    client, seen = await sdk_subscriber(app, "chat:cent-fanout", "ann")
    ws = await ws_subscriber(app, "chat:cent-fanout", "ben")
    try:
        result = await cent.publish(PublishRequest(channel="chat:cent-fanout", data={"text": "from cent"}))
        assert result.offset == 1
        assert result.epoch
        got = await recv_until(ws, lambda f: f.get("op") == "pub")
        assert (got["data"], got["offset"], got["epoch"]) == ({"text": "from cent"}, 1, result.epoch)
        await until(lambda: seen.data, "the SDK's publication")
        assert (seen.data, seen.offsets) == ([{"text": "from cent"}], [1])
    finally:
        await ws.close()
        await client.disconnect()


async def test_publish_broadcast_and_history_through_cent(cent: AsyncClient) -> None:
    first = await cent.publish(PublishRequest(channel="chat:cent-h", data=1, idempotency_key="k-1"))
    again = await cent.publish(PublishRequest(channel="chat:cent-h", data=1, idempotency_key="k-1"))
    assert (again.offset, again.epoch) == (first.offset, first.epoch) == (1, first.epoch)  # published once
    # No history in the default namespace: Centrifugo's empty result (cent's defaults).
    assert (await cent.publish(PublishRequest(channel="quiet:x", data=0))).offset == 0
    both = await cent.broadcast(BroadcastRequest(channels=["chat:cent-h", "sb:internal", "nope:x"], data=2))
    assert [r.result.offset if r.result else None for r in both.responses] == [2, None, None]
    assert [r.error.code if r.error else None for r in both.responses] == [None, 102, 102]
    top = await cent.history(HistoryRequest(channel="chat:cent-h"))  # no limit: the position only
    assert (top.publications, top.offset, top.epoch) == ([], 2, first.epoch)
    every = await cent.history(HistoryRequest(channel="chat:cent-h", limit=-1))
    assert [(p.data, p.offset) for p in every.publications] == [(1, 1), (2, 2)]
    after = await cent.history(
        HistoryRequest(channel="chat:cent-h", limit=10, since=StreamPosition(offset=1, epoch=first.epoch))
    )
    assert [p.data for p in after.publications] == [2]
    newest = await cent.history(HistoryRequest(channel="chat:cent-h", limit=1, reverse=True))
    assert [p.data for p in newest.publications] == [2]
    with pytest.raises(CentApiResponseError) as lost:
        await cent.history(
            HistoryRequest(channel="chat:cent-h", limit=1, since=StreamPosition(offset=1, epoch="other"))
        )
    assert lost.value.code == 112  # unrecoverable position
    await cent.history_remove(HistoryRemoveRequest(channel="chat:cent-h"))
    gone = await cent.history(HistoryRequest(channel="chat:cent-h", limit=-1))
    assert (gone.publications, gone.offset, gone.epoch) == ([], 2, first.epoch)  # the position stays
    assert (await cent.publish(PublishRequest(channel="chat:cent-h", data=3))).offset == 3


async def test_presence_channels_and_info_through_cent(app: AppProcess, cent: AsyncClient) -> None:
    client, _ = await sdk_subscriber(app, "chat:cent-p", "cara")
    try:
        presence = await cent.presence(PresenceRequest(channel="chat:cent-p"))
        assert [info.user for info in presence.presence.values()] == ["cara"]
        assert list(presence.presence) == [info.client for info in presence.presence.values()]
        stats = await cent.presence_stats(PresenceStatsRequest(channel="chat:cent-p"))
        assert (stats.num_clients, stats.num_users) == (1, 1)
        found = await cent.channels(ChannelsRequest(pattern="chat:cent-*"))
        assert {name: c.num_clients for name, c in found.channels.items()} == {"chat:cent-p": 1}
        assert (await cent.channels(ChannelsRequest(pattern="team:*"))).channels == {}
        nodes = (await cent.info(InfoRequest())).nodes
        assert len(nodes) == 1
        assert (nodes[0].uid, nodes[0].name, nodes[0].version) == ("cent", "cent", __version__)
    finally:
        await client.disconnect()


async def test_subscribe_unsubscribe_and_disconnect_through_cent(app: AppProcess, cent: AsyncClient) -> None:
    ws = await ws_subscriber(app, "", "dora")
    client = await connected(Client(url(app), token=token("dora")))
    try:
        await cent.subscribe(SubscribeRequest(user="dora", channel="chat:cent-s"))
        sub = await recv_until(ws, lambda f: f.get("op") == "sub")
        assert sub["channel"] == "chat:cent-s"
        await cent.unsubscribe(UnsubscribeRequest(user="dora", channel="chat:cent-s"))
        unsub = await recv_until(ws, lambda f: f.get("op") == "unsub")
        assert unsub["channel"] == "chat:cent-s"
        await cent.disconnect(DisconnectRequest(user="dora", disconnect=Disconnect(code=4501, reason="bye")))
        await until(lambda: client.state.value == "disconnected", "the SDK's disconnect (4500-4999: no reconnect)")
        assert await expect_close(ws) == (4501, "bye")
    finally:
        await ws.close()
        await client.disconnect()


async def test_errors_have_centrifugos_codes(app: AppProcess, cent: AsyncClient) -> None:
    async def code_of(call: Any) -> int:
        with pytest.raises(CentApiResponseError) as raised:
            await call
        return raised.value.code

    assert await code_of(cent.publish(PublishRequest(channel="nope:x", data=1))) == 102  # unknown namespace
    assert await code_of(cent.publish(PublishRequest(channel="switchboard:users", data=1))) == 102  # reserved
    assert await code_of(cent.publish(PublishRequest(channel="sb:{x}:meta", data=1))) == 102
    assert await code_of(cent.publish(PublishRequest(channel="chat:x", data=1, tags={"a": "b"}))) == 107
    assert await code_of(cent.publish(PublishRequest(channel="chat:x", data=1, skip_history=True))) == 107
    assert await code_of(cent.publish(PublishRequest(channel="bad channel", data=1))) == 107
    assert await code_of(cent.presence(PresenceRequest(channel="quiet:x"))) == 108  # no presence there
    assert await code_of(cent.history(HistoryRequest(channel="quiet:x", limit=1))) == 108
    assert await code_of(cent.history_remove(HistoryRemoveRequest(channel="quiet:x"))) == 108
    assert await code_of(cent.subscribe(SubscribeRequest(user="u", channel="chat:x", client="c1"))) == 107
    huge = "x" * (1 << 20)
    with pytest.raises(CentTransportError) as too_big:
        await cent.publish(PublishRequest(channel="chat:x", data=huge))
    assert too_big.value.status_code == 413
    wrong = AsyncClient(f"{app.http}/api", "not-the-key", timeout=5)
    try:
        with pytest.raises(CentUnauthorizedError):
            await wrong.info(InfoRequest())
    finally:
        await wrong._session.close()


def test_the_single_endpoint_the_apikey_header_and_bodies_that_are_not_params(app: AppProcess) -> None:
    with httpx.Client(base_url=app.http, timeout=5) as http:
        by_scheme = {"Authorization": f"apikey {TEST_API_KEY}"}
        one = http.post(
            "/api", json={"method": "publish", "params": {"channel": "chat:one", "data": 1}}, headers=by_scheme
        )
        assert one.status_code == 200
        assert one.json() == {"result": {"offset": 1, "epoch": one.json()["result"]["epoch"]}}
        unknown = http.post("/api", json={"method": "batch", "params": {}}, headers=API_HEADERS)
        assert unknown.json() == {"error": {"code": 104, "message": "method not found"}}
        for body in (b"{", b"[1]", b'{"channel": NaN}'):
            bad = http.post("/api/publish", content=body, headers=API_HEADERS)
            assert (bad.status_code, bad.json()["error"]["code"]) == (400, 107), body
        missing = http.post("/api/publish", json={"data": 1}, headers=API_HEADERS)
        assert (missing.status_code, missing.json()["error"]) == (
            200,
            {"code": 107, "message": "channel: Field required"},
        )
        assert http.post("/api/info", headers={"X-API-Key": "wrong"}).json()["error"]["code"] == 101
        assert http.post("/api/info").status_code == 401


def test_the_cent_example_of_the_docs_runs_as_written(tmp_path: Path) -> None:
    page = "docs/server-api.md"
    with Console(tmp_path) as console:
        console.run(example(page, "credentials"))
        console.check_python(example(page, "cent"), example(page, "cent-output"))
