"""Fossil delta compression on ``/connection/websocket`` (docs/sdks.md, "Delta compression"):
the frames on the wire with a plain WebSocket client, decoded by tests/fossil_spec.py, and the
real SDKs (centrifuge-python here, centrifuge-js through js/delta.mjs) rebuilding every state."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from centrifuge import Client, DeltaType, PublicationContext, SubscribedContext, SubscriptionEventHandler
from websockets.asyncio.client import ClientConnection

from tests.docs_examples import example
from tests.fossil_spec import apply
from tests.sdk.sdk_support import token
from tests.sdk.test_centrifuge_js import JS, installed
from tests.support import (
    API_HEADERS,
    TEST_API_KEY,
    TEST_SECRET,
    AppProcess,
    RedisServer,
    recv_json,
    running,
    ws_connect,
)


def namespaces() -> str:
    """The page's namespace (dash), and two more: deltas without history (live), and none (plain)."""
    return f"""
[default]
subscribe = "public"
publish = "subscribers"

{example("docs/sdks.md", "delta-namespace")}
[namespaces.live]
history_size = 0
allowed_delta_types = ["fossil"]

[namespaces.plain]
history_size = 100
history_ttl = 3600
"""


STATE_BYTES = 4096


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    workdir = tmp_path_factory.mktemp("delta")
    config = workdir / "switchboard.toml"
    config.write_text(namespaces())
    redis_server = RedisServer(workdir / "redis").start()
    env = {"SWITCHBOARD_BROKER_URL": redis_server.url, "SWITCHBOARD_CONFIG": str(config)}
    instance = AppProcess("delta", workdir, env)
    try:
        with running(instance):
            yield instance
    finally:
        redis_server.stop()


class Dashboard:
    """A ~4 KB JSON state of which each step changes one field."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.state: dict[str, Any] = {
            f"panel_{i}": {"value": 0, "unit": "req/s", "title": f"Panel n° {i}"} for i in range(64)
        }
        while len(orjson.dumps(self.state)) < STATE_BYTES:
            self.state[f"extra_{len(self.state)}"] = "·" * 20

    def step(self) -> dict[str, Any]:
        self.state[f"panel_{self.rng.randrange(64)}"]["value"] = self.rng.randrange(10**6)
        copy: dict[str, Any] = json.loads(orjson.dumps(self.state))
        return copy


def publish(app: AppProcess, channel: str, data: Any) -> None:
    response = httpx.post(f"{app.http}/api/v1/publish", json={"channel": channel, "data": data}, headers=API_HEADERS)
    response.raise_for_status()


async def client(app: AppProcess) -> ClientConnection:
    ws = await ws_connect(app.ws("/connection/websocket"))
    await ws.send(orjson.dumps({"id": 1, "connect": {}}).decode())
    assert "connect" in await recv_json(ws)
    connection: ClientConnection = ws
    return connection


async def subscribe(ws: ClientConnection, channel: str, **params: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"id": 2, "subscribe": {"channel": channel, **params}}).decode())
    reply: dict[str, Any] = await recv_json(ws)
    assert reply.get("id") == 2, reply
    result: dict[str, Any] = reply["subscribe"]
    return result


async def pubs(ws: ClientConnection, count: int) -> list[tuple[bytes, dict[str, Any]]]:
    """The next ``count`` publication pushes, raw and parsed (pings are answered)."""
    found: list[tuple[bytes, dict[str, Any]]] = []
    while len(found) < count:
        raw = await asyncio.wait_for(ws.recv(), 10)
        raw = raw.encode() if isinstance(raw, str) else raw
        frame = orjson.loads(raw)
        if not frame:
            await ws.send("{}")
        elif "pub" in frame.get("push", {}):
            found.append((raw, frame["push"]["pub"]))
    return found


class Decoder:
    """What an SDK does with a delta subscription's publications."""

    def __init__(self) -> None:
        self.base = b""
        self.kinds: list[str] = []

    def take(self, pub: dict[str, Any]) -> Any:
        assert isinstance(pub["data"], str)  # full or delta, data is a JSON string here
        data = pub["data"].encode()
        self.base = apply(self.base, data) if pub.get("delta") else data
        self.kinds.append("delta" if pub.get("delta") else "full")
        return json.loads(self.base)


async def test_negotiated_only_where_the_namespace_allows_it(app: AppProcess) -> None:
    ws = await client(app)
    assert "delta" not in await subscribe(ws, "plain:n", delta="fossil")
    publish(app, "plain:n", {"a": 1})
    [(_, pub)] = await pubs(ws, 1)
    assert pub["data"] == {"a": 1}  # not negotiated: data as usual
    await ws.close()
    ws = await client(app)
    assert "delta" not in await subscribe(ws, "dash:n", delta="xdelta")  # an unknown type: not negotiated
    await ws.close()
    ws = await client(app)
    await ws.send(orjson.dumps({"id": 2, "subscribe": {"channel": "dash:n", "delta": 1}}).decode())
    reply = await recv_json(ws)
    assert reply["error"]["code"] == 107  # bad request
    await ws.close()


async def test_stream_is_deltas_after_a_full_one_shared_and_smaller(app: AppProcess) -> None:
    delta_ws, plain_ws = await client(app), await client(app)
    assert (await subscribe(delta_ws, "dash:s", delta="fossil"))["delta"] is True
    await subscribe(plain_ws, "dash:s")
    board, states = Dashboard(1), []
    for _ in range(20):
        states.append(board.step())
        publish(app, "dash:s", states[-1])
    got, plain = await pubs(delta_ws, 20), await pubs(plain_ws, 20)
    decoder = Decoder()
    assert [decoder.take(pub) for _, pub in got] == states == [pub["data"] for _, pub in plain]
    assert decoder.kinds == ["full"] + ["delta"] * 19
    assert [pub["offset"] for _, pub in got] == list(range(1, 21))
    delta_bytes, plain_bytes = sum(len(raw) for raw, _ in got), sum(len(raw) for raw, _ in plain)
    assert delta_bytes * 5 < plain_bytes, (delta_bytes, plain_bytes)
    # A subscriber joining mid-stream gets a full publication first, then the same delta frames.
    late = await client(app)
    await subscribe(late, "dash:s", delta="fossil")
    for _ in range(5):
        states.append(board.step())
        publish(app, "dash:s", states[-1])
    late_got, more = await pubs(late, 5), await pubs(delta_ws, 5)
    late_decoder = Decoder()
    assert [late_decoder.take(pub) for _, pub in late_got] == states[-5:] == [decoder.take(pub) for _, pub in more]
    assert late_decoder.kinds == ["full"] + ["delta"] * 4
    assert [raw for raw, _ in late_got[1:]] == [raw for raw, _ in more[1:]]  # one frame for both
    for ws in (delta_ws, plain_ws, late):
        await ws.close()


async def test_channel_without_history_streams_deltas_too(app: AppProcess) -> None:
    ws = await client(app)
    assert (await subscribe(ws, "live:x", delta="fossil"))["delta"] is True
    board, states = Dashboard(2), []
    for _ in range(5):
        states.append(board.step())
        publish(app, "live:x", states[-1])
    decoder = Decoder()
    assert [decoder.take(pub) for _, pub in await pubs(ws, 5)] == states
    assert decoder.kinds == ["full"] + ["delta"] * 4
    await ws.close()


async def test_recovered_publications_are_full_then_the_stream_goes_on(app: AppProcess) -> None:
    ws = await client(app)
    first = await subscribe(ws, "dash:r", delta="fossil")
    board, states = Dashboard(3), []
    for _ in range(3):
        states.append(board.step())
        publish(app, "dash:r", states[-1])
    decoder = Decoder()
    assert [decoder.take(pub) for _, pub in await pubs(ws, 3)] == states
    await ws.close()
    for _ in range(3):  # missed while away
        states.append(board.step())
        publish(app, "dash:r", states[-1])
    ws = await client(app)
    reply = await subscribe(ws, "dash:r", delta="fossil", recover=True, offset=3, epoch=first["epoch"])
    assert reply["recovered"] is True
    assert reply["delta"] is True
    assert all("delta" not in pub for pub in reply["publications"])
    assert [decoder.take(pub) for pub in reply["publications"]] == states[3:]
    for _ in range(3):
        states.append(board.step())
        publish(app, "dash:r", states[-1])
    assert [decoder.take(pub) for _, pub in await pubs(ws, 3)] == states[6:]
    assert decoder.kinds[-3:] == ["full", "delta", "delta"]  # the first live one after a replay is full
    await ws.close()


class Seen(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.data: list[Any] = []
        self.subscribed: list[SubscribedContext] = []

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.data.append(ctx.pub.data)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)


async def until(predicate: Any, what: str, timeout: float = 10) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - the SDK's own state has no event to wait on
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def test_centrifuge_python_rebuilds_every_state_and_recovers(app: AppProcess) -> None:
    sdk = Client(app.ws("/connection/websocket"), token=token("dee"), min_reconnect_delay=1.0, max_reconnect_delay=1.0)
    await sdk.connect()
    await sdk.ready(5)
    seen = Seen()
    sub = sdk.new_subscription("dash:py", events=seen, delta=DeltaType.FOSSIL, recoverable=True)
    await sub.subscribe()
    await sub.ready(5)
    board, states = Dashboard(4), []
    for _ in range(30):
        states.append(board.step())
        publish(app, "dash:py", states[-1])
    await until(lambda: len(seen.data) == 30, "30 states")
    assert seen.data == states
    httpx.post(
        f"{app.http}/api/v1/disconnect", json={"user": "dee", "code": 4100, "reason": "moved"}, headers=API_HEADERS
    ).raise_for_status()
    await until(lambda: sdk.state.value != "connected", "the disconnect")
    for _ in range(3):
        states.append(board.step())
        publish(app, "dash:py", states[-1])
    await until(lambda: len(seen.subscribed) == 2, "the resubscribe")
    assert seen.subscribed[1].recovered is True
    for _ in range(3):
        states.append(board.step())
        publish(app, "dash:py", states[-1])
    await until(lambda: len(seen.data) == 36, "the recovered and the live states")
    assert seen.data == states
    await sdk.disconnect()


def test_centrifuge_js_rebuilds_every_state_and_recovers(app: AppProcess) -> None:
    installed()
    env = {
        **os.environ,
        "SB_HTTP": app.http,
        "SB_API_KEY": TEST_API_KEY,
        "SB_SECRET": TEST_SECRET,
        "SB_STATE_BYTES": str(STATE_BYTES),
    }
    done = subprocess.run(["node", "delta.mjs"], cwd=JS, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout)
    assert seen["received"] == seen["published"]
    assert len(seen["published"]) == 36
    assert seen["recovered"] is True
    assert seen["stats"]["numDeltaPayloads"] > 25
    assert seen["stats"]["bytesReceived"] * 5 < seen["stats"]["bytesDecoded"]
