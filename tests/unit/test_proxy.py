"""app/proxy.py and app/proxy_calls.py: the envelope, the result shapes, and failing closed.

The HTTP side runs against a small asyncio HTTP server in this process, so that each way a backend
can misbehave (hang, hold every slot, redirect, answer too much) is one short test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.auth import Identity
from app.broker.base import HistoryOptions
from app.config import Settings
from app.hooks import UNCHANGED
from app.namespaces import ConfigError, load_namespaces
from app.proxy import MAX_ANSWER_BYTES, Backend, BackendDisconnect, BackendError, Malformed, ProxyFailed
from app.proxy_calls import _data, parse_connect, pick_headers, refresh_parser, transport_fields
from tests.support import TEST_SECRET

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(status: str, body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@asynccontextmanager
async def http_server(respond: Callable[[], Awaitable[bytes]]) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(await respond())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()


def backend(**settings: Any) -> Backend:
    return Backend(Settings(jwt_secret=TEST_SECRET, **settings))


def whole(result: dict[str, Any]) -> dict[str, Any]:
    return result


async def test_a_result_is_parsed_and_an_error_or_disconnect_raised() -> None:
    replies = iter(
        [
            answer("200 OK", b'{"result":{"user":"ann"}}'),
            answer("200 OK", b'{"error":{"code":1403,"message":"no"}}'),
            answer("200 OK", b'{"disconnect":{"code":4501,"reason":"bye"}}'),
        ]
    )

    async def respond() -> bytes:
        return next(replies)

    client = backend()
    async with http_server(respond) as url:
        assert await client.call("rpc", url, {}, whole) == {"user": "ann"}
        with pytest.raises(BackendError) as refused:
            await client.call("rpc", url, {}, whole)
        assert (refused.value.wire_code, refused.value.message) == (1403, "no")
        with pytest.raises(BackendDisconnect) as gone:
            await client.call("rpc", url, {}, whole)
        assert (gone.value.close_code, gone.value.reason) == (4501, "bye")
    await client.close()


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        (answer("500 Internal Server Error", b"{}"), "status"),
        (answer("302 Found", b"", "Location: http://169.254.169.254/\r\n"), "status"),  # never followed
        (answer("200 OK", b"<html>"), "malformed"),
        (answer("200 OK", b"[1,2]"), "malformed"),
        (answer("200 OK", b'{"result":[]}'), "malformed"),
        (answer("200 OK", b'{"error":{"code":100,"message":"ours"}}'), "malformed"),  # outside 400-1999
        (answer("200 OK", b'{"disconnect":{"code":1000}}'), "malformed"),  # outside 4000-4999
        (answer("200 OK", b'{"result":{"pad":"' + b"x" * MAX_ANSWER_BYTES + b'"}}'), "malformed"),
    ],
)
async def test_every_bad_answer_fails_closed_with_113(reply: bytes, label: str) -> None:
    async def respond() -> bytes:
        return reply

    client = backend()
    async with http_server(respond) as url:
        with pytest.raises(ProxyFailed) as failed:
            await client.call("subscribe", url, {}, whole)
    assert failed.value.result == label
    assert failed.value.wire_code == 113
    await client.close()


async def test_a_hung_backend_times_out_and_a_full_queue_is_busy() -> None:
    async def hang() -> bytes:
        await asyncio.sleep(30)
        return b""

    client = backend(proxy_timeout=0.3, proxy_max_concurrency=1, auth_timeout=0.1)
    async with http_server(hang) as url:
        first = asyncio.create_task(client.call("rpc", url, {}, whole))
        await asyncio.sleep(0.05)  # the first holds the only slot
        with pytest.raises(ProxyFailed) as busy:
            await client.call("rpc", url, {}, whole)
        assert busy.value.result == "busy"
        with pytest.raises(ProxyFailed) as slow:
            await first
        assert slow.value.result == "timeout"
    await client.close()


async def test_an_unreachable_backend_fails_closed() -> None:
    client = backend()
    with pytest.raises(ProxyFailed) as failed:
        await client.call("connect", "http://127.0.0.1:9/nothing-listens", {}, whole)
    assert failed.value.result == "unreachable"
    await client.close()


def test_the_connect_result_becomes_an_identity() -> None:
    found = parse_connect(
        {"user": "ann", "name": "Ann", "channels": ["team:*"], "info": {"a": 1}, "expire_at": 2_000_000_000}
    )
    assert found.identity == Identity("ann", "Ann", ("team:*",), {"a": 1}, 2_000_000_000)
    assert found.data is UNCHANGED
    assert parse_connect({"user": "", "expire_at": 0}).identity.expires is None  # 0: never, as Centrifugo
    for bad in (
        {},
        {"user": 7},
        {"user": "a", "channels": "x"},
        {"user": "a", "info": []},
        {"user": "a", "expire_at": "soon"},
    ):
        with pytest.raises(Malformed):
            parse_connect(bad)
    with pytest.raises(Malformed):
        parse_connect({"user": "a", "info": {"big": "x" * 4096}})


def test_b64data_must_be_base64_of_json() -> None:
    assert _data({"b64data": base64.b64encode(orjson.dumps({"k": [1]})).decode()}) == {"k": [1]}
    assert _data({"data": None}) is None
    assert _data({}) is UNCHANGED
    for bad in ({"b64data": "!!"}, {"b64data": base64.b64encode(b"\xff").decode()}, {"b64data": 3}):
        with pytest.raises(Malformed):
            _data(bad)


def test_a_refresh_renews_or_expires() -> None:
    ann = Identity("ann", "Ann", (), {"old": 1}, 100)
    parse = refresh_parser(ann)
    assert parse({"expire_at": 200, "info": {"new": 1}}) == Identity("ann", "Ann", (), {"new": 1}, 200)
    assert parse({"expire_at": 200}) == Identity("ann", "Ann", (), {"old": 1}, 200)
    assert parse({"expired": True, "expire_at": 200}) is None
    assert parse({}) is None  # no new time: nothing to renew


def test_only_allowlisted_headers_are_picked() -> None:
    raw = [(b"cookie", b"s=1"), (b"x-secret", b"no"), (b"origin", b"https://a")]
    assert pick_headers(raw, frozenset({b"cookie", b"origin"})) == {"cookie": "s=1", "origin": "https://a"}


def test_backend_urls_come_from_configuration_and_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not an http"):
        Settings(jwt_secret=TEST_SECRET, connect_proxy_url="file:///etc/passwd")
    bad = tmp_path / "bad.toml"
    bad.write_text('[namespaces.x]\nsubscribe_proxy = "gopher://x"\n')
    with pytest.raises(ConfigError, match=r"namespaces\.x\.subscribe_proxy: 'gopher://x' is not an http"):
        load_namespaces(bad, HistoryOptions())
    good = tmp_path / "good.toml"
    good.write_text('[rpc.proxies]\n"a." = "http://one/rpc"\n"a.b." = "http://two/rpc"\n')
    spaces = load_namespaces(good, HistoryOptions())
    assert spaces.rpc_proxy("a.b.c") == "http://two/rpc"  # the longest prefix
    assert spaces.rpc_proxy("a.x") == "http://one/rpc"
    assert spaces.rpc_proxy("b") is None


async def test_a_caller_that_gives_up_never_cancels_the_request() -> None:
    """httpcore 1.0 leaks a pool slot when a request is cancelled under contention (app/proxy.py):
    the request runs to its end, so its keep-alive connection serves the next call."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await asyncio.sleep(0.2)
                writer.write(answer("200 OK", b'{"result":{}}'))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    client = backend(proxy_timeout=2, proxy_max_concurrency=1)
    caller = asyncio.create_task(client.call("publish", url, {}, whole))
    await asyncio.sleep(0.05)
    caller.cancel()  # the client went away mid-call
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await client.call("publish", url, {}, whole) == {}  # waits for the slot, then served
    assert connections == 1  # the first request ended normally; its connection was reused
    server.close()
    await client.close()


def test_an_anonymous_connect_answer_cannot_carry_grants() -> None:
    """The token path refuses an empty ``sub`` with ``channels``; the connect proxy does the same."""
    assert parse_connect({"user": ""}).identity.channels == ()
    with pytest.raises(Malformed):
        parse_connect({"user": "", "channels": ["team:*"]})


@pytest.mark.parametrize(
    ("endpoint", "protobuf", "expected"),
    [
        ("ws", False, ("websocket", "json", "json")),
        ("centrifuge", False, ("websocket", "json", "json")),
        ("centrifuge", True, ("websocket", "protobuf", "binary")),
        ("centrifuge_http_stream", False, ("http_stream", "json", "json")),
        ("centrifuge_sse", False, ("sse", "json", "json")),
        ("sse", False, ("uni_sse", "json", "json")),
        ("stream", False, ("uni_http_stream", "json", "json")),
    ],
)
def test_a_proxy_request_names_the_clients_transport_as_centrifugo_does(
    endpoint: str, protobuf: bool, expected: tuple[str, str, str]
) -> None:
    fields = transport_fields(endpoint, protobuf)
    assert (fields["transport"], fields["protocol"], fields["encoding"]) == expected
