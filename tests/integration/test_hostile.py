"""Hostile clients cannot make an instance hold unbounded memory: ping floods and stalled readers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.presence_scripts import EXPIRIES
from app.sweeper import LOCK
from tests.integration.wsproto import connected
from tests.support import API_HEADERS, AppProcess, RedisServer, running, wait_until, ws_connect

RSS_BOUND = 32 * 1024 * 1024


def rss(app: AppProcess) -> int:
    assert app.proc is not None
    with open(f"/proc/{app.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def metric(app: AppProcess, line_start: str) -> float:
    for line in httpx.get(app.http + "/metrics", timeout=5).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppProcess]:
    env = {
        "SWITCHBOARD_WRITE_TIMEOUT": "1",
        "SWITCHBOARD_HANDSHAKE_TIMEOUT": "1",
        "SWITCHBOARD_RATE_LIMIT_BURST": "100000",
    }
    with running(AppProcess("hostile", tmp_path, env)) as (process,):
        yield process


@pytest.fixture
def redis_app(tmp_path: Path) -> Iterator[tuple[AppProcess, RedisServer]]:
    """One instance on its own redis-server, with short TTLs and limits, as above."""
    redis_server = RedisServer(tmp_path / "redis").start()
    env = {
        "SWITCHBOARD_BROKER_URL": redis_server.url,
        "SWITCHBOARD_WRITE_TIMEOUT": "1",
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "100000",
        "SWITCHBOARD_RATE_LIMIT_BURST": "100000",
        "SWITCHBOARD_HISTORY_TTL": "2",
        "SWITCHBOARD_PRESENCE_TTL": "2",
    }
    try:
        with running(AppProcess("hostile-redis", tmp_path, env)) as (process,):
            yield process, redis_server
    finally:
        redis_server.stop()


def raw_websocket(port: int, path: str) -> socket.socket:
    """A client that completes the handshake, then never reads: a tiny receive window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1024)
    assert b" 101 " in response.split(b"\r\n", 1)[0]
    return sock


def ping_frame(payload: bytes) -> bytes:
    return bytes((0x89, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload  # masked, zero key


async def echo_p50(app: AppProcess, rounds: int = 50) -> float:
    async with ws_connect(app.ws("/ws/echo")) as ws:
        times = []
        for n in range(rounds):
            started = time.perf_counter()
            await ws.send(str(n))
            assert await ws.recv() == f"Echo: {n}"
            times.append(time.perf_counter() - started)
    return statistics.median(times)


async def test_a_ping_flood_without_reading_is_cut_off_and_bounded(app: AppProcess) -> None:
    before = rss(app)
    flooder = raw_websocket(app.port, "/ws/echo")
    flooder.setblocking(False)
    frame = ping_frame(b"x" * 125) * 64
    sent, peak, cut = 0, before, False
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(loop.sock_sendall(flooder, frame), 2)
            sent += len(frame)
        except (ConnectionError, OSError, TimeoutError):
            cut = True  # reset by the server, or it stopped reading us: either way, bounded
            break
        peak = max(peak, rss(app))
        if sent > 50 * 1024 * 1024:
            break
    echo = await echo_p50(app)  # another client, meanwhile
    flooder.close()
    peak = max(peak, rss(app))
    grew = (peak - before) / 1e6
    print(f"ping flood: {sent / 1e6:.1f} MB of pings sent, RSS +{grew:.1f} MB, echo p50 {echo * 1000:.2f} ms")
    assert cut or metric(app, "switchboard_slow_consumer_disconnects_total") >= 1
    assert peak - before < RSS_BOUND
    assert echo < 0.010


class RssWatch:
    """Samples an instance's RSS in a thread while a hostile client runs: the peak over a baseline."""

    def __init__(self, app: AppProcess) -> None:
        self.app, self.before = app, rss(app)
        self.peak, self._stop = self.before, False

    async def __aenter__(self) -> RssWatch:
        self._task = asyncio.create_task(asyncio.to_thread(self._sample))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        await self._task

    def _sample(self) -> None:
        while not self._stop:
            with contextlib.suppress(AssertionError, OSError):
                self.peak = max(self.peak, rss(self.app))
            time.sleep(0.02)

    @property
    def grew(self) -> int:
        return self.peak - self.before


async def test_a_resume_from_the_start_that_is_never_read_is_paced_and_cut_off(
    redis_app: tuple[AppProcess, RedisServer],
) -> None:
    app, _ = redis_app
    # 48 MB of history on one channel: a resume from offset 0 asks for all of it.
    async with httpx.AsyncClient(base_url=app.http, headers=API_HEADERS, timeout=10) as http:
        for n in range(1000):
            response = await http.post("/api/global/big", json={"content": [n, "x" * 48_000]})
            assert response.status_code == 202
        epoch = response.json()["epoch"]
    async with RssWatch(app) as watch:
        hostile = raw_websocket(app.port, f"/ws/global/big?since=0&epoch={epoch}")
        echo = await echo_p50(app)  # another client, while the replay is stuck
        wait_until(lambda: metric(app, "switchboard_slow_consumer_disconnects_total") >= 1, 10, "cut off")
        # Sampling goes on until the socket is gone: the bound must hold throughout.
        wait_until(lambda: metric(app, 'switchboard_connections{endpoint="global"}') == 0, 5, "the socket gone")
    hostile.close()
    print(f"resume of 48 MB never read: RSS +{watch.grew / 1e6:.1f} MB, echo p50 {echo * 1000:.2f} ms")
    assert watch.grew < RSS_BOUND
    assert echo < 0.010


async def test_joins_without_a_publish_leave_no_key_past_the_documented_ttls(
    redis_app: tuple[AppProcess, RedisServer],
) -> None:
    app, redis_server = redis_app
    client = redis_server.client()
    baseline = set(client.keys("*"))
    async with connected(app.ws("/ws")) as proto:
        for n in range(2000):  # one-off joins, half of them resuming from the start
            resume = {"since": 0, "epoch": ""} if n % 2 else {}
            await proto.ok("subscribe", channel=f"anon:{n}", **resume)
            await proto.ok("unsubscribe", channel=f"anon:{n}")
    longest = 2000  # ms: SWITCHBOARD_HISTORY_TTL and SWITCHBOARD_PRESENCE_TTL here
    # The instance's own keys: the sweeper's short lock, and the index of channels with members,
    # which the sweeper empties as their presence expires.
    own = {LOCK.encode(), EXPIRIES.encode()}
    left = {key: client.pttl(key) for key in set(client.keys("*")) - baseline - own}
    assert all(0 < ttl <= longest for ttl in left.values()), {k: t for k, t in left.items() if not 0 < t <= longest}

    def nothing_left() -> bool:
        return not set(client.keys("*")) - baseline - {LOCK.encode()}

    wait_until(nothing_left, 10, "every key the joins made gone")


async def test_a_stalled_reader_is_aborted_after_the_write_timeout(app: AppProcess) -> None:
    async with RssWatch(app) as watch:
        stalled = raw_websocket(app.port, "/ws/global/stall")
        wait_until(lambda: metric(app, 'switchboard_connections{endpoint="global"}') == 1, 5, "subscribed")
        wait_until(
            lambda: httpx.get(app.http + "/api/presence/global:stall", headers=API_HEADERS).json()["members"] == 1,
            5,
            "joined",
        )
        # Fewer frames than the send queue holds (256), but more bytes than the kernel's socket
        # buffers take, so a backlog forms that the peer never drains.
        async with httpx.AsyncClient(base_url=app.http, headers=API_HEADERS, timeout=5) as http:
            for n in range(150):
                response = await http.post("/api/global/stall", json={"content": [n, "x" * 60_000]})
                assert response.status_code == 202
        started = time.monotonic()
        echo = await echo_p50(app)
        wait_until(lambda: metric(app, 'switchboard_connections{endpoint="global"}') == 0, 10, "the socket gone")
        assert time.monotonic() - started < 5  # WRITE_TIMEOUT is 1 s here
    print(f"stalled reader: RSS +{watch.grew / 1e6:.1f} MB, echo p50 {echo * 1000:.2f} ms")
    assert metric(app, "switchboard_slow_consumer_disconnects_total") >= 1
    assert watch.grew < RSS_BOUND
    assert echo < 0.010
    stalled.close()


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it does not in time."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {seconds}s") from None
    except ConnectionResetError:
        pass
    return received


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "one-byte-at-a-time"])
def test_a_request_head_that_never_completes_is_closed(app: AppProcess, trickle: bool) -> None:
    with socket.create_connection(("127.0.0.1", app.port)) as sock:
        started = time.monotonic()
        if trickle:
            sock.sendall(b"GET /ws/echo HTTP/1.1\r\n")
            for _ in range(10):
                time.sleep(0.2)  # the attack itself: a byte at a time, never the end of the head
                try:
                    sock.sendall(b"X")
                except OSError:
                    break
        closed_within(sock, 5)
        assert time.monotonic() - started < 4  # HANDSHAKE_TIMEOUT is 1 s here


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /ws/echo?token=" + b"t" * 60_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(200)) + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 40_000 + b"\r\n\r\n", b"431"),
    ],
    ids=["60 KB token in the URL", "200 header fields", "40 KB header"],
)
def test_oversized_request_heads_get_an_answer_and_a_close(app: AppProcess, head: bytes, status: bytes) -> None:
    with socket.create_connection(("127.0.0.1", app.port)) as sock:
        sock.sendall(head)
        response = closed_within(sock, 5)
    assert response.split(b" ", 2)[1] == status, response[:200]


def test_endless_headers_are_not_buffered(app: AppProcess) -> None:
    before = rss(app)
    with socket.create_connection(("127.0.0.1", app.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
        sent = 0
        try:
            while sent < 60_000_000:
                sock.sendall(b"y" * 65536)
                sent += 65536
        except OSError:
            pass  # answered and closed long before 60 MB
    assert sent < 60_000_000
    assert rss(app) - before < RSS_BOUND


def test_invalid_utf8_is_closed_1007_logged_in_one_line_and_counted(app: AppProcess) -> None:
    for _ in range(3):
        sock = raw_websocket(app.port, "/ws/echo")
        payload = b"\xff\xfe"
        for _ in range(5):  # repeats on the same connection are not logged again
            with contextlib.suppress(OSError):
                sock.sendall(bytes((0x81, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload)
        close = closed_within(sock, 5)
        assert close[:4] == b"\x88\x02\x03\xef"  # a close frame with code 1007
        sock.close()
    wait_until(lambda: metric(app, 'switchboard_protocol_errors_total{kind="client_frame"}') == 3, 5, "counted")
    log = app.log_text()
    assert log.count("Invalid UTF-8 sequence received from client.") == 3
    assert "Traceback" not in log
