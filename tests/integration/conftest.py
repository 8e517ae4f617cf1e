"""A module-scoped cluster: a private redis-server and two app instances sharing it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.auth import mint_token
from app.config import Settings
from tests.support import API_HEADERS, TEST_SECRET, AppProcess, RedisServer, running, wait_until


@dataclass
class Cluster:
    redis: RedisServer
    a: AppProcess
    b: AppProcess
    workdir: Path

    def presence(self, channel: str) -> int:
        response = httpx.get(f"{self.a.http}/api/presence/{channel}", headers=API_HEADERS, timeout=5)
        response.raise_for_status()
        members: int = response.json()["members"]
        return members

    def wait_presence(self, channel: str, expected: int, timeout: float = 5) -> None:
        wait_until(lambda: self.presence(channel) == expected, timeout, f"{channel} presence == {expected}")


def token(sub: str, name: str | None = None, ttl: float = 600) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, name, ttl)


def start_cluster(workdir: Path, env: dict[str, str] | None = None) -> tuple[RedisServer, AppProcess, AppProcess]:
    redis_server = RedisServer(workdir / "redis").start()
    env = {"SWITCHBOARD_BROKER_URL": redis_server.url, **(env or {})}
    return redis_server, AppProcess("a", workdir, env), AppProcess("b", workdir, env)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for one test, stopped after it."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    """Override in a test module to configure its cluster."""
    return {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, cluster_env: dict[str, str]) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    redis_server, a, b = start_cluster(workdir, cluster_env)
    try:
        with running(a, b):
            yield Cluster(redis_server, a, b, workdir)
    finally:
        redis_server.stop()
