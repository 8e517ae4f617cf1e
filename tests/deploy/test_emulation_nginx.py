"""Centrifugo's emulated transports behind the repository's nginx.conf, on two real instances and
redis: the streaming paths are in nginx's streaming location (unbuffered, long read timeout), and
centrifuge-js falls back to them when nginx drops the WebSocket upgrade.

nginx.conf as shipped (its upstream pointed at this machine's ports), with ``location /`` changed
twice for the test: its WebSocket upgrade headers removed (so the SDK's WebSocket fails through
the proxy, as behind a proxy that refuses upgrades) and its read timeout cut to ``SHORT`` seconds,
so that a stream served by it would end within seconds. A control copy leaves the emulation paths
out of the streaming location: its stream is cut at ``SHORT``, while the shipped one stays open.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest

from tests.deploy.test_streams_nginx import render
from tests.integration.conftest import start_cluster, token
from tests.netns import start_nginx
from tests.sdk.sdk_support import JS, NAMESPACES, installed
from tests.support import ROOT, TEST_API_KEY, TEST_SECRET, free_port, running, wait_until

SHORT = 2  # seconds: location /'s read timeout in this test
STREAMING = "location ~ ^/(sse|stream|connection/http_stream|connection/sse)$ {"


def for_test(conf: str, upstreams: list[int], port: int, *, streaming: bool = True) -> str:
    conf = render(conf, upstreams, port)
    general = conf.index("        location / {")
    head, tail = conf[:general], conf[general:]
    tail, count = re.subn(r"\n\s*proxy_set_header (Upgrade \$http_upgrade|Connection \$connection_upgrade);", "", tail)
    assert count == 2, "nginx.conf's location / changed: update this test"
    tail, count = re.subn(r"proxy_read_timeout \d+s;", f"proxy_read_timeout {SHORT}s;", tail)
    assert count == 1
    assert head.count(STREAMING) == 1, "nginx.conf's streaming location changed: update this test"
    if not streaming:  # the control: the emulated transports left to location /
        head = head.replace(STREAMING, "location ~ ^/(sse|stream)$ {")
    return head + tail


@dataclass
class Stack:
    proxy: str
    control: str  # the same, without the emulation paths in the streaming location


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("emulation-nginx")
    config = workdir / "switchboard.toml"
    config.write_text(NAMESPACES)
    # Pings far apart: a stream that waits is quiet for longer than SHORT.
    env = {"SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_PING_INTERVAL": "20"}
    redis_server, a, b = start_cluster(workdir, env)
    nginxes = []
    try:
        with running(a, b):
            urls = []
            for name, streaming in (("nginx", True), ("control", False)):
                port = free_port()
                conf = workdir / f"{name}.conf"
                shipped = (ROOT / "nginx.conf").read_text()
                conf.write_text(for_test(shipped, [a.port, b.port], port, streaming=streaming))
                nginxes.append(start_nginx(conf, workdir, name))
                urls.append(f"http://127.0.0.1:{port}")
                wait_until(lambda: httpx.get(urls[-1] + "/healthz").status_code == 200, 10, name)
            yield Stack(*urls)
    finally:
        for nginx in nginxes:
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
        redis_server.stop()


def test_centrifuge_js_falls_back_through_nginx_that_drops_the_upgrade(stack: Stack) -> None:
    installed()
    node_env = {
        **os.environ,
        "SB_A": stack.proxy,
        "SB_B": stack.proxy,
        "SB_WS": stack.proxy.replace("http", "ws") + "/connection/websocket",
        "SB_PONGS": "0",  # this stack pings every 20 s (the quiet stream's test)
        "SB_API_KEY": TEST_API_KEY,
        "SB_SECRET": TEST_SECRET,
    }
    done = subprocess.run(["node", "emulation.mjs"], cwd=JS, env=node_env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout)
    for kind in ("http_stream", "sse"):
        found = results[kind]
        assert "error" not in found, found["error"]
        assert found["transports"] == [kind, kind, kind]
        assert found["data"] == [1, 2, 3, 4, 5]
        assert found["recovered"] is True
        assert found["postStatuses"] == [204]


async def open_stream(
    http: httpx.AsyncClient, base: str, user: str
) -> tuple[httpx.Response, AsyncIterator[str], dict[str, str]]:
    body = orjson.dumps({"id": 1, "connect": {"token": token(user)}})
    response = await http.send(http.build_request("POST", f"{base}/connection/http_stream", content=body), stream=True)
    assert response.status_code == 200
    lines = response.aiter_lines()
    connect: dict[str, str] = orjson.loads(await anext(lines))["connect"]
    return response, lines, connect


async def test_a_quiet_emulated_stream_outlasts_the_general_read_timeout(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        kept, kept_lines, connect = await open_stream(http, stack.proxy, "emu-quiet")
        cut, cut_lines, _ = await open_stream(http, stack.control, "emu-cut")
        try:
            started = asyncio.get_running_loop().time()
            # The control's stream ends by its read timeout: nginx drops it mid-body.
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                async with asyncio.timeout(SHORT + 8):
                    async for _ in cut_lines:
                        pass
            assert asyncio.get_running_loop().time() - started >= SHORT - 0.5
            # The shipped config's stream, as quiet for as long, is open: a command gets its reply.
            data = orjson.dumps({"id": 2, "presence_stats": {"channel": "chat:quiet"}}).decode()
            body = {"session": connect["session"], "node": connect["node"], "data": data}
            assert (await http.post(f"{stack.proxy}/emulation", json=body)).status_code == 204
            async with asyncio.timeout(5):
                line = await anext(kept_lines)
            assert orjson.loads(line)["id"] == 2
        finally:
            await kept.aclose()
            await cut.aclose()
