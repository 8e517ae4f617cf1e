"""The per-user connection limit after Redis loses its data (a restart without persistence)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson
import pytest

from tests.integration.test_server_api import user_token
from tests.integration.wsproto import connected
from tests.support import AppProcess, RedisServer, expect_close, recv_json, running, ws_connect

pytestmark = pytest.mark.timeout(90)

LIMIT = 3


async def attempt(app: AppProcess, user: str) -> tuple[int | None, int | None]:
    """One connect as ``user``: (error code or None if admitted, close code)."""
    async with ws_connect(app.ws("/ws")) as ws:
        await ws.send(orjson.dumps({"id": 1, "op": "connect", "token": user_token(user)}).decode())
        reply = await recv_json(ws, timeout=10)
        if reply.get("ok"):
            return None, None
        return reply["error"]["code"], (await expect_close(ws))[0]


async def answered(app: AppProcess, user: str) -> tuple[int | None, int | None]:
    """A connect that Redis answered: attempts refused as "broker unavailable" (108, 1013) are
    retried, since the instances reconnect to the restarted Redis on their own schedule."""
    async with asyncio.timeout(20):
        while True:
            found = await attempt(app, user)
            if found != (108, 1013):
                return found
            await asyncio.sleep(0.1)


async def test_the_limit_holds_after_redis_restarts_without_its_data(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()  # no persistence: a restart loses every key
    # The default PRESENCE_TTL (30): slots are refreshed every 10 s, too late to be what holds.
    env = {"SWITCHBOARD_BROKER_URL": redis_server.url, "SWITCHBOARD_USER_CONNECTION_LIMIT": str(LIMIT)}
    a, b = AppProcess("a", tmp_path, env), AppProcess("b", tmp_path, env)
    try:
        with running(a, b):
            async with contextlib.AsyncExitStack() as stack:
                for app in (a, a, b):
                    await stack.enter_async_context(connected(app.ws("/ws"), user_token("held")))
                assert await answered(b, "held") == (106, 4004)
                redis_server.restart()
                assert redis_server.client().dbsize() == 0
                # On either instance, whichever notices first: still at the limit.
                assert await answered(b, "held") == (106, 4004)
                assert await answered(a, "held") == (106, 4004)
                assert await answered(b, "someone-else") == (None, None)  # others are admitted
    finally:
        redis_server.stop()
