"""What the SDK tests share: their namespaces and tokens, an app on its own redis-server, the
server API, polling the SDKs' recorded state, and running a Node script of ``js/``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from centrifuge import JoinContext, LeaveContext, PublicationContext, SubscribedContext, SubscriptionEventHandler

from app.auth import mint_token
from app.config import Settings
from tests.support import API_HEADERS, ROOT, TEST_API_KEY, TEST_SECRET, AppProcess, RedisServer, running

# chat: open, with history, presence and join/leave; team: granted only (a subscription token).
NAMESPACES = """
[default]
subscribe = "public"
publish = "subscribers"

[namespaces.chat]
subscribe = "public"
publish = "subscribers"
history_size = 100
history_ttl = 3600
presence = true
join_leave = true

[namespaces.team]
subscribe = "granted"
publish = "granted"
presence = true
"""

# Seconds a connection (or subscription) outlives its token's expiry: the refresh tests wait past
# it, and the Node scripts past a 2 s token, its expiry and the grace (REFRESH_WAIT_MS).
REFRESH_GRACE = 1
REFRESH_WAIT_MS = 5000

# The instance both Protobuf SDKs meet (test_centrifuge_python_protobuf.py, ..._js_protobuf.py).
PROTOBUF_ENV = {
    "SWITCHBOARD_REFRESH_GRACE": str(REFRESH_GRACE),
    # Pings every second, a pong due within one: the SDK answers them in Protobuf, or is closed.
    "SWITCHBOARD_PING_INTERVAL": "1",
    "SWITCHBOARD_HEARTBEAT_TIMEOUT": "1",
    "SWITCHBOARD_HOOKS": "tests.integration.proxy_hooks:hooks",  # on_rpc answers rpc
}

# The limits the bad-input tests push against (test_centrifuge_wire.py, ..._bad_input.py).
BURST = 20
MAX_BYTES = 1 << 20  # room for 10,000 commands in one frame
LIMITS = {
    "SWITCHBOARD_RATE_LIMIT_BURST": str(BURST),
    "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "5",
    "SWITCHBOARD_MAX_MESSAGE_BYTES": str(MAX_BYTES),
}

JS = ROOT / "tests" / "sdk" / "js"
NPM = ["npm", "--no-audit", "--no-fund", "--loglevel=error"]


def token(sub: str, ttl: float = 600, **claims: object) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, None, ttl, **claims)


@contextlib.contextmanager
def instances(workdir: Path, config: str, env: dict[str, str], *names: str) -> Iterator[tuple[AppProcess, ...]]:
    """One instance of the app per name, on one new redis-server, with ``config`` as their
    switchboard.toml and ``env`` on top; all stopped at the end, redis last."""
    path = workdir / "switchboard.toml"
    path.write_text(config)
    redis_server = RedisServer(workdir / "redis").start()
    full = {"SWITCHBOARD_BROKER_URL": redis_server.url, "SWITCHBOARD_CONFIG": str(path), **env}
    try:
        with running(*(AppProcess(name, workdir, full) for name in names)) as apps:
            yield apps
    finally:
        redis_server.stop()


@contextlib.contextmanager
def instance(workdir: Path, config: str, env: dict[str, str], name: str) -> Iterator[AppProcess]:
    with instances(workdir, config, env, name) as (app,):
        yield app


def url(app: AppProcess) -> str:
    """The app's Centrifugo-compatible WebSocket endpoint."""
    return app.ws("/connection/websocket")


def api(app: AppProcess, method: str, body: dict[str, Any]) -> Any:
    """The server API's answer; an error status fails the test."""
    response = httpx.post(f"{app.http}/api/v1/{method}", json=body, headers=API_HEADERS, timeout=5)
    response.raise_for_status()
    return response.json()


async def until(predicate: Callable[[], object], what: str, timeout: float = 5) -> None:
    """Poll what the SDK's handlers recorded (or its state), with a deadline naming ``what``."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - the SDK's own state has no event to wait on
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def connected(client: Any) -> Any:
    """A centrifuge-python client, connected (its connect reply in)."""
    await client.connect()
    await client.ready(5)
    return client


async def subscribed(client: Any, channel: str, events: Any, **options: Any) -> Any:
    """``client``'s subscription to ``channel``, subscribed, its events going to ``events``."""
    sub = client.new_subscription(channel, events=events, **options)
    await sub.subscribe()
    await sub.ready(5)
    return sub


class Events(SubscriptionEventHandler):
    """What one centrifuge-python subscription saw, in order; ``decode`` turns a publication's
    data into what is kept (as is in JSON mode)."""

    def __init__(self) -> None:
        self.data: list[Any] = []
        self.offsets: list[int] = []
        self.joins: list[str] = []
        self.leaves: list[str] = []
        self.subscribed: list[SubscribedContext] = []

    def decode(self, data: Any) -> Any:
        return data

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.data.append(self.decode(ctx.pub.data))
        self.offsets.append(ctx.pub.offset)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info.client)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append(ctx.info.client)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)


def installed() -> None:
    """``npm ci`` in js/ unless node_modules is as new as the lock file."""
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is needed (make deps installs it)"
    lock, marker = JS / "package-lock.json", JS / "node_modules" / ".package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run([*NPM, "ci", "--prefer-offline"], cwd=JS, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-4000:]


def run_node(script: str, app: AppProcess | None, env: dict[str, str], timeout: float = 60) -> Any:
    """Run js/``script`` (SB_HTTP is ``app``'s, with the test API key and secret) and return the
    JSON it prints; a non-zero exit fails the test with its stderr."""
    installed()
    node_env = {**os.environ, "SB_API_KEY": TEST_API_KEY, "SB_SECRET": TEST_SECRET, **env}
    if app is not None:
        node_env["SB_HTTP"] = app.http
    done = subprocess.run(["node", script], cwd=JS, env=node_env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def scenario(results: dict[str, Any], name: str) -> dict[str, Any]:
    """One scenario's result from a script's report; a scenario that threw fails the test."""
    found: dict[str, Any] = results[name]
    assert "error" not in found, found.get("error")
    return found
