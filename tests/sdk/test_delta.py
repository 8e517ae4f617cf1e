"""Fossil delta compression on ``/connection/websocket`` (docs/sdks.md, "Delta compression"):
the frames on the wire with a plain WebSocket client, decoded by tests/fossil_spec.py, and the
real SDKs (centrifuge-python here, centrifuge-js through js/delta.mjs) rebuilding every state."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from centrifuge import Client, DeltaType
from websockets.asyncio.client import ClientConnection

from tests.docs_examples import example
from tests.fossil_spec import apply
from tests.sdk import sdk_support
from tests.sdk.sdk_support import Events, api, connected, instance, run_node, subscribed, token, url
from tests.support import (
    AppProcess,
    recv_json,
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
    with instance(tmp_path_factory.mktemp("delta"), namespaces(), {}, "delta") as found:
        yield found


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
    api(app, "publish", {"channel": channel, "data": data})


def published(app: AppProcess, channel: str, board: Dashboard, count: int) -> list[dict[str, Any]]:
    """``count`` more states of ``board``, each published on ``channel`` in turn."""
    states = []
    for _ in range(count):
        states.append(board.step())
        publish(app, channel, states[-1])
    return states


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
    board = Dashboard(1)
    states = published(app, "dash:s", board, 20)
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
    states += published(app, "dash:s", board, 5)
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
    board = Dashboard(2)
    states = published(app, "live:x", board, 5)
    decoder = Decoder()
    assert [decoder.take(pub) for _, pub in await pubs(ws, 5)] == states
    assert decoder.kinds == ["full"] + ["delta"] * 4
    await ws.close()


async def test_recovered_publications_are_full_then_the_stream_goes_on(app: AppProcess) -> None:
    ws = await client(app)
    first = await subscribe(ws, "dash:r", delta="fossil")
    board = Dashboard(3)
    states = published(app, "dash:r", board, 3)
    decoder = Decoder()
    assert [decoder.take(pub) for _, pub in await pubs(ws, 3)] == states
    await ws.close()
    states += published(app, "dash:r", board, 3)  # missed while away
    ws = await client(app)
    reply = await subscribe(ws, "dash:r", delta="fossil", recover=True, offset=3, epoch=first["epoch"])
    assert reply["recovered"] is True
    assert reply["delta"] is True
    assert all("delta" not in pub for pub in reply["publications"])
    assert [decoder.take(pub) for pub in reply["publications"]] == states[3:]
    states += published(app, "dash:r", board, 3)
    assert [decoder.take(pub) for _, pub in await pubs(ws, 3)] == states[6:]
    assert decoder.kinds[-3:] == ["full", "delta", "delta"]  # the first live one after a replay is full
    await ws.close()


async def until(predicate: Callable[[], object], what: str, timeout: float = 10) -> None:
    await sdk_support.until(predicate, what, timeout)


async def test_centrifuge_python_rebuilds_every_state_and_recovers(app: AppProcess) -> None:
    sdk = await connected(Client(url(app), token=token("dee"), min_reconnect_delay=1.0, max_reconnect_delay=1.0))
    seen = Events()
    await subscribed(sdk, "dash:py", seen, delta=DeltaType.FOSSIL, recoverable=True)
    board = Dashboard(4)
    states = published(app, "dash:py", board, 30)
    await until(lambda: len(seen.data) == 30, "30 states")
    assert seen.data == states
    api(app, "disconnect", {"user": "dee", "code": 4100, "reason": "moved"})
    await until(lambda: sdk.state.value != "connected", "the disconnect")
    states += published(app, "dash:py", board, 3)
    await until(lambda: len(seen.subscribed) == 2, "the resubscribe")
    assert seen.subscribed[1].recovered is True
    states += published(app, "dash:py", board, 3)
    await until(lambda: len(seen.data) == 36, "the recovered and the live states")
    assert seen.data == states
    await sdk.disconnect()


def test_centrifuge_js_rebuilds_every_state_and_recovers(app: AppProcess) -> None:
    seen = run_node("delta.mjs", app, {"SB_STATE_BYTES": str(STATE_BYTES)})
    assert seen["received"] == seen["published"]
    assert len(seen["published"]) == 36
    assert seen["recovered"] is True
    assert seen["stats"]["numDeltaPayloads"] > 25
    assert seen["stats"]["bytesReceived"] * 5 < seen["stats"]["bytesDecoded"]
