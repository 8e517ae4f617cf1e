"""switchboard_client.api against real instances: typed calls, errors, and a publish retried through a Redis outage."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from switchboard_client.api import APIError, SwitchboardAPI, SwitchboardAPISync
from tests.integration.conftest import start_cluster
from tests.integration.wsproto import connected, is_pub
from tests.support import TEST_API_KEY, free_port, running


async def test_the_async_client_publishes_once_through_a_redis_outage(tmp_path: Path) -> None:
    redis_server, a, b = start_cluster(tmp_path)
    try:
        with running(a, b):
            async with SwitchboardAPI(a.http, TEST_API_KEY) as api, connected(b.ws("/ws")) as reader:
                await reader.ok("subscribe", channel="orders")
                first = await api.publish("orders", {"n": 1})
                assert first["offset"] == 1
                assert (await api.info())["instances"]
                redis_server.stop()
                # Refused with 503 while Redis is down; retried with the same key until it is back.
                publishing = asyncio.create_task(api.publish("orders", {"n": 2}))
                await asyncio.sleep(0.3)
                assert not publishing.done()
                redis_server.start()
                second = await asyncio.wait_for(publishing, 15)
                assert second["offset"] >= 1
                pubs = await reader.pubs("orders", 2, timeout=10)
                assert [p["data"] for p in pubs] == [{"n": 1}, {"n": 2}]
                assert [f for f in await reader.quiet(0.5) if is_pub("orders")(f)] == []
                with pytest.raises(APIError) as bad:
                    await api.publish("bad channel", 1)
                assert (bad.value.status, bad.value.code) == (422, 107)
    finally:
        redis_server.stop()


def test_the_sync_client_and_its_errors(tmp_path: Path) -> None:
    redis_server, a, _ = start_cluster(tmp_path)
    try:
        with running(a), SwitchboardAPISync(a.http, TEST_API_KEY) as api:
            assert api.publish("news", {"headline": "hi"}, idempotency_key="k1") == api.publish(
                "news", {"headline": "hi"}, idempotency_key="k1"
            )
            assert api.history("news")["publications"][0]["data"] == {"headline": "hi"}
            assert api.presence_stats("news") == {"clients": 0, "users": 0}
            assert api.send("nobody", 1) == {}
            assert api.top_channels(sort="rate") == {"channels": [], "answered": 1, "missing": []}
            assert api.user_connections("nobody") == {"connections": [], "answered": 1, "missing": []}
            with SwitchboardAPISync(a.http, "wrong-key-0123456789-abcdefghijklmnopqrstuvwxyz") as wrong:
                with pytest.raises(APIError) as refused:
                    wrong.info()
                assert (refused.value.status, refused.value.code) == (401, 101)
    finally:
        redis_server.stop()


class _Proxy(BaseHTTPRequestHandler):
    """What a proxy or gateway in front of Switchboard may answer instead of the API's own bodies."""

    REPLIES: ClassVar[dict[str, tuple[int, str, bytes]]] = {
        "/api/v1/publish": (502, "application/json", b'{"error":"bad gateway"}'),
        "/api/v1/info": (503, "text/html", b"<html><body>503 Service Unavailable</body></html>"),
        "/api/v1/send": (200, "text/plain", b"ok"),
        "/api/v1/channels": (400, "application/json", b'{"error":{"code":"x","message":5}}'),
        "/api/v1/history": (429, "application/json", b"[1, 2]"),
    }

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, kind, body = self.REPLIES[self.path]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


EXPECTED = [  # (method, args, status, code, message)
    ("publish", ("news", "x"), 502, 100, "bad gateway"),
    ("info", (), 503, 100, "<html><body>503 Service Unavailable</body></html>"),
    ("send", ("ann", "x"), 200, 100, "the reply is not a JSON object: ok"),
    ("channels", (), 400, 100, "5"),
    ("history", ("news",), 429, 100, "[1, 2]"),
]


async def test_a_proxys_own_error_bodies_raise_api_error(proxy: str) -> None:
    async with SwitchboardAPI(proxy, TEST_API_KEY, retries=0) as api:
        for method, args, status, code, message in EXPECTED:
            with pytest.raises(APIError) as raised:
                await getattr(api, method)(*args)
            assert (raised.value.status, raised.value.code, raised.value.message) == (status, code, message)


def test_the_sync_client_raises_api_error_for_them_too(proxy: str) -> None:
    with SwitchboardAPISync(proxy, TEST_API_KEY, retries=0) as api:
        for method, args, status, code, message in EXPECTED:
            with pytest.raises(APIError) as raised:
                getattr(api, method)(*args)
            assert (raised.value.status, raised.value.code, raised.value.message) == (status, code, message)
