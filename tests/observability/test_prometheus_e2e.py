"""A real Prometheus scrapes a real two-instance cluster (one under gunicorn with two workers)
carrying real WebSocket traffic; every dashboard panel and recording rule must return data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from websockets.asyncio.client import ClientConnection

from scripts import observability
from tests.idp import IdentityProvider, SigningKey
from tests.observability import panels
from tests.observability.traffic import not_moved, protocol_traffic, traffic_env
from tests.support import (
    API_HEADERS,
    ROOT,
    TEST_SECRET,
    AppProcess,
    RedisServer,
    expect_close,
    free_port,
    recv_json,
    send_json,
    wait_until,
    ws_connect,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
BURST = 5


@dataclass
class Stack:
    redis: RedisServer
    gunicorn: subprocess.Popen[bytes]
    gunicorn_port: int
    second: AppProcess
    prometheus: str
    idp: IdentityProvider
    key: SigningKey

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert result, f"no data for {expr}"
        return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("observability")
    redis_server = RedisServer(tmp / "redis").start()
    idp, key = IdentityProvider(tmp).start(), SigningKey("RS256", "obs-1")
    env_common = {
        "SWITCHBOARD_BROKER_URL": redis_server.url,
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "2",
        "SWITCHBOARD_RATE_LIMIT_BURST": str(BURST),
        "SWITCHBOARD_SEND_QUEUE_SIZE": "8",
        **traffic_env(tmp, idp, key),
    }
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_"))}
    env = {
        **clean,
        **env_common,
        "SWITCHBOARD_HOST": "127.0.0.1",
        "SWITCHBOARD_PORT": str(port),
        "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
        "SWITCHBOARD_INSTANCE_ID": "g",
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "multiproc"),
    }
    with (tmp / "gunicorn.log").open("wb") as log:
        gunicorn = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
    second = AppProcess("second", tmp, env_common)
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "switchboard",
                "static_configs": [{"targets": [f"127.0.0.1:{port}", f"127.0.0.1:{second.port}"]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = None
    try:
        second.start()
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, 30, "gunicorn instance")
        with (tmp / "prometheus.log").open("wb") as log:
            prometheus = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=log,
                stderr=log,
            )
        s = Stack(redis_server, gunicorn, port, second, f"http://127.0.0.1:{prom_port}", idp, key)
        # Poll for the first scrape of both targets rather than sleeping.
        wait_until(
            lambda: len([r for r in s.query('up{job="switchboard"}') if r["value"][1] == "1"]) == 2,
            60,
            "Prometheus to scrape both instances",
        )
        yield s
    finally:
        for proc in (prometheus, gunicorn):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        second.stop()
        redis_server.stop()
        idp.stop()


@dataclass
class Traffic:
    open_sockets: list[ClientConnection]
    received: int  # client frames the servers counted as received (within limits)
    deliveries: int  # frames the servers fanned out to sockets


async def stalled_socket(port: int, path: str) -> ClientConnection:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    conn: ClientConnection = await ws_connect(f"ws://127.0.0.1:{port}{path}", sock=sock, max_queue=1)
    return conn


def instance_metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def traffic(stack: Stack) -> AsyncIterator[Traffic]:
    g = f"ws://127.0.0.1:{stack.gunicorn_port}"
    b = stack.second.ws("")
    opened: list[ClientConnection] = []
    received = deliveries = 0

    async def open_(url: str) -> ClientConnection:
        ws: ClientConnection = await ws_connect(url)
        opened.append(ws)
        return ws

    def wait_members(channel: str, n: int) -> None:
        headers = API_HEADERS
        url = f"{stack.second.http}/api/presence/{channel}"
        wait_until(lambda: httpx.get(url, headers=headers).json()["members"] == n, 5, f"{n} in {channel}")

    # Chat across both instances: 3 members; each waits for its own join notice (so it is
    # subscribed) before the next connects, and earlier members see every later join.
    chat: list[ClientConnection] = []
    for url in (f"{g}/ws/chat?username=g0", f"{g}/ws/chat?username=g1", f"{b}/ws/chat?username=b"):
        chat.append(await open_(url))
        for ws in chat:
            assert (await recv_json(ws))["type"] == "system"
    for n in range(4):
        await send_json(chat[n % 3], {"content": n})
        received += 1
    for i, ws in enumerate(chat):
        sent_here = sum(1 for n in range(4) if n % 3 == i)
        frames = [await recv_json(ws) for _ in range(4 - sent_here)]
        assert all(f["type"] == "message" for f in frames)
    deliveries += 4 * 2
    # A room and a global channel, on both instances.
    rooms = [await open_(f"{g}/ws/room/r1")]
    wait_members("room:r1", 1)
    rooms.append(await open_(f"{b}/ws/room/r1"))
    assert (await recv_json(rooms[0]))["type"] == "user_joined"
    await send_json(rooms[1], {"content": "hello room"})
    assert (await recv_json(rooms[0]))["content"] == "hello room"
    received += 1
    deliveries += 2
    globals_ = [await open_(f"{g}/ws/global/news"), await open_(f"{b}/ws/global/news")]
    wait_members("global:news", 2)
    for ws in globals_:
        await send_json(ws, {"content": "hi"})
        received += 1
    for ws in globals_:
        assert [(await recv_json(ws))["content"] for _ in range(2)] == ["hi", "hi"]
    deliveries += 4

    # A bad token, a flood cut off by the rate limiter, and a stalled reader cut off as slow.
    async with ws_connect(f"{b}/ws/secure?token=not-a-token") as bad:
        assert (await expect_close(bad))[0] == 1008
    async with ws_connect(f"{b}/ws/echo") as flood:
        for i in range(40):
            await flood.send(str(i))
        assert (await expect_close(flood))[0] == 1008
    received += BURST
    stalled = await stalled_socket(stack.second.port, "/ws/global/firehose")
    headers = API_HEADERS
    async with httpx.AsyncClient(base_url=stack.second.http, headers=headers) as http:
        for n in range(400):
            await http.post("/api/global/firehose", json={"content": [n, "x" * 32_000]})
            if n % 50 == 49 and instance_metric(stack.second.http, "switchboard_slow_consumer_disconnects_total"):
                break
    assert instance_metric(stack.second.http, "switchboard_slow_consumer_disconnects_total") >= 1
    stalled.transport.abort()
    await protocol_traffic(g, b, stack.second.http, stack.idp, stack.key)
    yield Traffic(opened, received, deliveries)
    await asyncio.gather(*(ws.close() for ws in opened))


async def test_connection_gauge_equals_open_sockets(stack: Stack, traffic: Traffic) -> None:
    expected = len(traffic.open_sockets)
    wait_until(
        lambda: stack.value("sum(switchboard_connections)") == expected,
        20,
        f"Prometheus to see {expected} open sockets",
    )
    # Both gunicorn workers report into the same target; the sum across targets is exact.
    per_instance = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in stack.query("sum by (instance) (switchboard_connections)")
    }
    assert sum(per_instance.values()) == expected
    assert len(per_instance) == 2


async def test_counters_are_at_least_what_was_sent(stack: Stack, traffic: Traffic) -> None:
    def caught_up() -> bool:
        return stack.value("sum(switchboard_messages_received_total)") >= traffic.received

    wait_until(caught_up, 20, "received counter")
    assert stack.value("sum(switchboard_messages_delivered_total)") >= traffic.deliveries
    assert stack.value("sum(switchboard_auth_failures_total)") >= 1
    assert stack.value("sum(switchboard_rate_limited_total)") >= 1
    assert stack.value("sum(switchboard_slow_consumer_disconnects_total)") >= 1
    # Counted when the session ends: after the bounded attempt to flush a close to the stalled socket.
    wait_until(lambda: stack.value('sum(switchboard_disconnects_total{code="4000"})') >= 1, 15, "4000 disconnect")
    assert stack.value("min(switchboard_broker_up)") == 1
    assert stack.value("min(switchboard_ready)") == 1


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(observability.DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def concrete(expr: str) -> str:
    return expr.replace("$__rate_interval", "20s").replace("$instance", ".*")


async def test_every_dashboard_expression_returns_data(stack: Stack, traffic: Traffic) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20

    def all_have_data() -> bool:
        return all(stack.query(concrete(expr)) for _, expr in exprs)

    # Rates need two scrapes after the traffic: poll, then report exactly which panel is empty.
    with contextlib.suppress(AssertionError):
        wait_until(all_have_data, 30, "every panel to have data")
    empty = [title for title, expr in exprs if not stack.query(concrete(expr))]
    assert not empty, f"panels without data: {empty}"


async def test_every_recording_rule_returns_data(stack: Stack, traffic: Traffic) -> None:
    records = [r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r]
    assert records
    with contextlib.suppress(AssertionError):
        wait_until(lambda: all(stack.query(name) for name in records), 30, "recording rules")
    assert not [name for name in records if not stack.query(name)]


async def test_promtool_accepts_the_real_metrics_output(stack: Stack) -> None:
    for url in (f"http://127.0.0.1:{stack.gunicorn_port}", stack.second.http):
        text = httpx.get(url + "/metrics").text
        assert "switchboard_connections" in text
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


async def test_every_metric_exported_after_real_traffic_has_a_panel(stack: Stack, traffic: Traffic) -> None:
    """What both instances' /metrics export (gunicorn's merged view and a single process), after
    the traffic above, is each on the dashboard or on the commented allowlist (panels.py)."""
    texts = [httpx.get(url + "/metrics").text for url in (f"http://127.0.0.1:{stack.gunicorn_port}", stack.second.http)]
    found = [family for text in texts for family in panels.families(text)]
    assert len({f.name for f in found if f.name.startswith("switchboard_")}) >= 30
    assert not panels.without_panel(found), "add a panel in scripts/observability.py"
    # The traffic reached the newer metrics, rather than their exported zeros passing alone.
    assert not not_moved("\n".join(texts))
