"""A stalled reader is cut off with 4000 once its queue is full; nobody else waits for it."""

from __future__ import annotations

import asyncio
import re
import socket

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.conftest import Cluster
from tests.support import API_HEADERS, recv_json, wait_until, ws_connect

MESSAGES = 300
PAYLOAD = "x" * 32_000


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {
        "SWITCHBOARD_SEND_QUEUE_SIZE": "8",
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "100000",
        "SWITCHBOARD_RATE_LIMIT_BURST": "100000",
    }


def metric(app_http: str, name: str) -> float:
    text = httpx.get(app_http + "/metrics", timeout=5).text
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def small_buffer_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive window, so a stalled reader backs up quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_stalled_reader_is_disconnected_and_delays_nobody(cluster: Cluster) -> None:
    app = cluster.a
    url = app.ws("/ws/global/firehose")
    stalled = await ws_connect(url, sock=small_buffer_socket(app.port), max_queue=1)
    headers = API_HEADERS
    async with ws_connect(url, max_size=None) as fast, httpx.AsyncClient(base_url=cluster.b.http) as http:
        cluster.wait_presence("global:firehose", 2)

        async def publish() -> None:
            # Over HTTP: a publishing socket would itself be a subscriber that must keep reading.
            for n in range(MESSAGES):
                response = await http.post("/api/global/firehose", json={"content": [n, PAYLOAD]}, headers=headers)
                assert response.status_code == 202

        async def read_all() -> list[int]:
            return [(await recv_json(fast, timeout=10))["content"][0] for _ in range(MESSAGES)]

        _, seen = await asyncio.gather(publish(), read_all())
        # The fast reader got everything, in order, while the stalled one was backing up.
        assert seen == list(range(MESSAGES))

    wait_until(lambda: metric(app.http, "switchboard_slow_consumer_disconnects_total") >= 1, 10, "slow-consumer cut")
    # The stalled client now reads: a prefix of the stream, then the named close code.
    got = []
    with pytest.raises(ConnectionClosed):
        while True:
            got.append((await recv_json(stalled, timeout=10))["content"][0])
    assert stalled.protocol.close_rcvd is not None
    assert stalled.protocol.close_rcvd.code == 4000
    assert got == list(range(len(got)))
    assert len(got) < MESSAGES


async def test_a_burst_of_requests_is_not_mistaken_for_a_slow_consumer(cluster: Cluster) -> None:
    """Sixty frames sent at once get sixty replies, though the send queue holds only eight."""
    async with ws_connect(cluster.a.ws("/ws/echo")) as ws:
        for i in range(60):
            await ws.send(str(i))
        assert [await ws.recv() for _ in range(60)] == [f"Echo: {i}" for i in range(60)]
