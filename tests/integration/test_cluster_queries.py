"""top_channels and user_connections under gunicorn: every worker of an instance answers, since
each holds its own sockets (app/cluster_query.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.auth import mint_token
from app.config import Settings
from tests.integration.wsproto import connected
from tests.support import API_HEADERS, ROOT, TEST_API_KEY, TEST_SECRET, RedisServer, free_port, wait_until

CONNECTIONS = 8


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[int]:
    """One instance, "g": gunicorn with two workers sharing a redis-server; its port."""
    redis_server = RedisServer(tmp_path / "redis").start()
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_", "WEB_"))}
    env = {
        **clean,
        "SWITCHBOARD_HOST": "127.0.0.1",
        "SWITCHBOARD_PORT": str(port),
        "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
        "SWITCHBOARD_API_KEYS": TEST_API_KEY,
        "SWITCHBOARD_BROKER_URL": redis_server.url,
        "SWITCHBOARD_INSTANCE_ID": "g",
        "SWITCHBOARD_DRAIN_SECONDS": "1",
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
    }
    with (tmp_path / "gunicorn.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        wait_until(lambda: ready(port), 30, "gunicorn's two workers")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
        redis_server.stop()


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def call(port: int, method: str, body: dict[str, str]) -> dict[str, object]:
    response = httpx.post(f"http://127.0.0.1:{port}/api/v1/{method}", json=body, headers=API_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    found: dict[str, object] = response.json()
    return found


async def test_both_workers_of_an_instance_answer(gunicorn: int) -> None:
    # Both workers answer (it used to stop at the first answer from "g": half the instance).
    wait_until(lambda: call(gunicorn, "top_channels", {})["answered"] == 2, 10, "both workers up")
    token = mint_token(Settings(jwt_secret=TEST_SECRET), "w", "W", 600)
    async with contextlib.AsyncExitStack() as stack:
        protos = [
            await stack.enter_async_context(connected(f"ws://127.0.0.1:{gunicorn}/ws", token))
            for _ in range(CONNECTIONS)
        ]
        for proto in protos:
            await proto.ok("subscribe", channel="spread")
        found = call(gunicorn, "user_connections", {"user": "w"})
        assert (found["answered"], found["missing"]) == (2, [])
        connections = found["connections"]
        assert isinstance(connections, list)
        # Wherever the kernel put each socket, every one is found.
        assert sorted(c["client"] for c in connections) == sorted(p.client_id for p in protos)
        top = call(gunicorn, "top_channels", {})
        assert top["channels"] == [{"channel": "spread", "subscribers": CONNECTIONS, "rate": 0.0}]
