"""Centrifugo's bidirectional emulation at the HTTP level, against two real instances and redis:
``/connection/http_stream`` and ``/connection/sse`` on A, ``POST /emulation`` on either, relayed
through redis to the process that holds the session. The refusals (unknown session or node,
oversized or malformed requests, too many commands in flight), the stream's slow-consumer bound,
and the metrics' fixed endpoint labels. centrifuge-js itself: tests/sdk/test_centrifuge_emulation.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.protocols.centrifuge import MAX_QUEUED_FRAMES
from app.protocols.emulation import ANSWER_TIMEOUT
from tests.integration.conftest import Cluster, token
from tests.integration.test_streams import PAYLOAD, eventually, metric, publish
from tests.support import API_HEADERS

CONFIG = """
[namespaces.chat]
subscribe = "public"
publish = "subscribers"
history_size = 100
presence = true
"""


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    config: Path = tmp_path_factory.mktemp("emulation") / "switchboard.toml"
    config.write_text(CONFIG)
    return {
        "SWITCHBOARD_CONFIG": str(config),
        "SWITCHBOARD_SEND_QUEUE_SIZE": "8",
        "SWITCHBOARD_HOOKS": "tests.integration.emulation_hooks:hooks",
    }


def command(cmd_id: int, name: str, **params: Any) -> bytes:
    return orjson.dumps({"id": cmd_id, name: params})


class Stream:
    """One emulated connection read line by line: its connect reply, then what follows."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self.connect: dict[str, Any] = {}

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                line = await anext(self._lines)
                if line:
                    found: dict[str, Any] = orjson.loads(line)
                    return found

    async def reply(self, cmd_id: int) -> dict[str, Any]:
        while (found := await self.next()).get("id") != cmd_id:
            pass
        return found


@contextlib.asynccontextmanager
async def http_stream(http: httpx.AsyncClient, base: str, user: str) -> AsyncIterator[Stream]:
    body = command(1, "connect", token=token(user))
    async with http.stream("POST", f"{base}/connection/http_stream", content=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.headers["x-accel-buffering"] == "no"
        stream = Stream(response.aiter_lines())
        stream.connect = (await stream.reply(1))["connect"]
        yield stream


async def emulate(http: httpx.AsyncClient, base: str, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await http.post(f"{base}/emulation", content=content, headers={"content-type": "application/json"})


def request(stream: Stream, *commands: bytes, **override: str) -> dict[str, str]:
    found = {"session": stream.connect["session"], "node": stream.connect["node"], "data": ""}
    found["data"] = b"\n".join(commands).decode()
    return {**found, **override}


async def test_commands_posted_to_the_other_instance_reach_the_stream_and_its_replies_come_back(
    cluster: Cluster,
) -> None:
    async with httpx.AsyncClient(timeout=10) as http, http_stream(http, cluster.a.http, "emu-1") as stream:
        assert len(stream.connect["session"]) >= 32  # secrets.token_urlsafe(24)
        assert stream.connect["node"].startswith("a.")  # the process, within instance a
        assert metric(cluster.a.http, "switchboard_connections", 'endpoint="centrifuge_http_stream"') == 1
        subscribe = command(2, "subscribe", channel="chat:emu")
        publish_it = command(3, "publish", channel="chat:emu", data={"n": 1})
        answered = await emulate(http, cluster.b.http, request(stream, subscribe, publish_it))
        assert (answered.status_code, answered.content) == (204, b"")
        assert (await stream.reply(2))["subscribe"]["recoverable"] is True
        pushed = await stream.next()
        assert pushed["push"]["pub"]["data"] == {"n": 1}
        assert (await stream.reply(3))["publish"] == {}
        # And a pong ({}), through this instance's own relay to itself: 204, nothing answered.
        assert (await emulate(http, cluster.a.http, request(stream, b"{}"))).status_code == 204


async def test_an_unknown_session_or_node_is_a_404_with_an_error_body_on_either_instance(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as http, http_stream(http, cluster.a.http, "emu-2") as stream:
        for base in (cluster.a.http, cluster.b.http):  # local, then relayed through redis
            answered = await emulate(http, base, request(stream, b"{}", session="not-" + stream.connect["session"]))
            assert answered.status_code == 404
            assert answered.json()["error"]["code"] == 107
            assert "unknown session" in answered.json()["error"]["message"]
        started = asyncio.get_running_loop().time()
        answered = await emulate(http, cluster.b.http, request(stream, b"{}", node="a.gone"))
        assert answered.status_code == 404  # no process answers for that node
        assert asyncio.get_running_loop().time() - started < ANSWER_TIMEOUT + 2
        # The session itself was never touched: it still answers.
        answered = await emulate(http, cluster.b.http, request(stream, command(4, "presence", channel="chat:none")))
        assert answered.status_code == 204
        assert (await stream.reply(4))["error"]["code"] == 103  # presence is for subscribers


async def test_an_oversized_or_malformed_emulation_request_is_refused_in_centrifugo_shape(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as http, http_stream(http, cluster.a.http, "emu-3") as stream:
        big = command(5, "publish", channel="chat:big", data="x" * 70_000)  # SWITCHBOARD_MAX_MESSAGE_BYTES: 65536
        answered = await emulate(http, cluster.b.http, request(stream, big))
        assert answered.status_code == 413
        assert answered.json()["error"]["code"] == 106
        for malformed in (b"not json", b"[]", orjson.dumps({"session": "s", "node": "n", "data": 5})):
            answered = await emulate(http, cluster.b.http, malformed)
            assert answered.status_code == 400
            assert answered.json()["error"]["code"] == 107
        answered = await emulate(http, cluster.b.http, request(stream, command(6, "history", channel="chat:big")))
        assert answered.status_code == 204
        assert (await stream.reply(6))["history"]["publications"] == []


async def test_commands_in_flight_per_session_are_bounded(cluster: Cluster) -> None:
    """A slow rpc holds the worker: its frame queue and the session's inbox fill, then 429."""
    async with httpx.AsyncClient(timeout=10) as http, http_stream(http, cluster.a.http, "emu-4") as stream:
        statuses = []
        for n in range(20):
            method = "slow" if n == 0 else "fast"
            rpc = command(100 + n, "rpc", method=method, data={})
            statuses.append((await emulate(http, cluster.a.http, request(stream, rpc))).status_code)
        # One running, MAX_QUEUED_FRAMES in the worker's queue, one in the reader's hand, and
        # MAX_QUEUED_FRAMES in the inbox: the rest is refused, each one.
        taken = 1 + MAX_QUEUED_FRAMES + 1 + MAX_QUEUED_FRAMES
        assert statuses == [204] * taken + [429] * (20 - taken)
        refused = await emulate(http, cluster.b.http, request(stream, command(200, "rpc", method="fast", data={})))
        assert refused.status_code == 429  # relayed: the same answer
        assert refused.json()["error"]["code"] == 111
        # Each command taken is answered, in order, once the slow one is done.
        for n in range(taken):
            assert (await stream.reply(100 + n))["rpc"]["data"]["method"] == ("slow" if n == 0 else "fast")


async def test_sse_opens_with_cf_connect_and_refuses_what_is_not_a_stream(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{cluster.a.http}/connection/sse"
        refused = await http.get(url)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == 107
        assert (await http.get(f"{cluster.a.http}/connection/http_stream")).status_code == 405
        params = {"cf_connect": command(1, "connect", token="not-a-token").decode()}
        async with http.stream("GET", url, params=params) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
        # A refused connect: the error reply, then a disconnect push, then the end of the stream.
        assert orjson.loads(events[0])["error"]["code"] == 101
        assert orjson.loads(events[1]) == {"push": {"disconnect": {"code": 3500, "reason": "bad token: malformed"}}}
        # A good one: the connect reply is the first event; the token in the URL is never logged.
        secret = token("emu-sse")
        params = {"cf_connect": command(1, "connect", token=secret).decode()}
        async with http.stream("GET", url, params=params) as response:
            lines = response.aiter_lines()
            async with asyncio.timeout(10):
                while not (line := await anext(lines)).startswith("data: "):
                    pass
            assert orjson.loads(line[6:])["connect"]["session"]
        await eventually(lambda: "GET /connection/sse" in cluster.a.log_text(), "the request logged")
        assert secret not in cluster.a.log_text()


async def test_a_stream_whose_reader_stops_is_cut_off_at_the_queue_bound(cluster: Cluster) -> None:
    app, messages = cluster.a, 300
    label = 'endpoint="centrifuge_http_stream"'
    cut_before = metric(app.http, "switchboard_slow_consumer_disconnects_total")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", app.port))
    body = command(1, "connect", token=token("emu-stalled")) + b"\n" + command(2, "subscribe", channel="chat:fire")
    head = b"POST /connection/http_stream HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body)
    stalled.sendall(head + body)  # and never reads
    try:
        await eventually(lambda: metric(app.http, "switchboard_connections", label) == 1, "the stalled stream in")
        await eventually(lambda: cluster.presence("chat:fire") == 1, "subscribed")
        async with httpx.AsyncClient(timeout=10) as http:
            for n in range(messages):
                await publish(http, cluster.b.http, "chat:fire", n, pad=PAYLOAD)
                if metric(app.http, "switchboard_connections", label) == 0:
                    break
        await eventually(lambda: metric(app.http, "switchboard_connections", label) == 0, "the stream cut off")
        assert metric(app.http, "switchboard_slow_consumer_disconnects_total") == cut_before + 1
        assert n < messages - 1  # cut long before the end: its backlog was bounded
    finally:
        stalled.close()
    response = httpx.get(f"{app.http}/api/presence/chat:fire", headers=API_HEADERS, timeout=5)
    assert response.json()["members"] == 0


async def test_a_client_gone_mid_body_leaves_no_traceback(cluster: Cluster) -> None:
    app = cluster.b
    for path in ("/emulation", "/connection/http_stream"):
        with socket.create_connection(("127.0.0.1", app.port)) as sock:
            sock.sendall(b'POST %s HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{"session"' % path.encode())
            sock.shutdown(socket.SHUT_WR)  # gone, 990 bytes short
            sock.settimeout(5)
            while sock.recv(4096):  # until the server has closed its side
                pass
        # The next request is served after the broken one was handled, in the same process.
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await emulate(http, app.http, b"[]")).status_code == 400
    assert "Traceback" not in app.log_text()
    assert "Exception in ASGI application" not in app.log_text()
