"""Cluster-wide user limits and a dead instance's members announced once, on three instances."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.integration.test_server_api import Three, start_three, user_token
from tests.integration.wsproto import connected
from tests.support import AppProcess, expect_close, recv_json, recv_until, running, ws_connect

PRESENCE_TTL = 2.0


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Three]:
    redis_server, apps = start_three(tmp_path, {"SWITCHBOARD_USER_CONNECTION_LIMIT": "2"})
    try:
        with running(*apps):
            yield Three(redis_server, apps)  # type: ignore[arg-type]
    finally:
        redis_server.stop()


@pytest.fixture
def short_presence(tmp_path: Path) -> Iterator[Three]:
    redis_server, apps = start_three(tmp_path, {"SWITCHBOARD_PRESENCE_TTL": str(PRESENCE_TTL)})
    try:
        with running(*apps):
            yield Three(redis_server, apps)  # type: ignore[arg-type]
    finally:
        redis_server.stop()


async def read_for(ws: ClientConnection, seconds: float) -> list[Any]:
    """Every frame that arrives within ``seconds``."""
    found: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                found.append(orjson.loads(await ws.recv()))
    return found


async def admitted_within(app: AppProcess, user: str, seconds: float) -> None:
    """Until a new connection of ``user`` is admitted (a slot freeing has no event to wait on)."""
    async with asyncio.timeout(seconds):
        while True:
            async with ws_connect(app.ws("/ws")) as ws:
                await ws.send(orjson.dumps({"id": 1, "op": "connect", "token": user_token(user)}).decode())
                if (await recv_json(ws)).get("ok"):
                    return
            await asyncio.sleep(0.1)


async def test_a_users_connections_are_capped_across_the_cluster(limited: Three) -> None:
    a, b, c = limited.apps
    async with connected(a.ws("/ws"), user_token("lim")) as first, connected(b.ws("/ws"), user_token("lim")):
        # The third, on another instance: refused with an error reply, then 4004.
        async with ws_connect(c.ws("/ws")) as ws:
            await ws.send(orjson.dumps({"id": 1, "op": "connect", "token": user_token("lim")}).decode())
            assert (await recv_json(ws))["error"]["code"] == 106
            assert (await expect_close(ws))[0] == 4004
        # The tutorial endpoints count too.
        async with ws_connect(c.ws(f"/ws/secure?token={user_token('lim')}")) as secure:
            assert (await expect_close(secure))[0] == 4004
        async with connected(c.ws("/ws"), user_token("someone-else")):
            pass  # other users are not affected
        await first.ws.close()
    # A slot frees when its connection closes: a new one fits again (close and release may race).
    await admitted_within(c, "lim", 5)


async def test_a_killed_instances_slots_free_within_the_presence_ttl(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_USER_CONNECTION_LIMIT": "1", "SWITCHBOARD_PRESENCE_TTL": str(PRESENCE_TTL)}
    redis_server, apps = start_three(tmp_path, env)
    try:
        with running(*apps):
            a, b, _ = apps
            async with connected(a.ws("/ws"), user_token("solo")) as held:
                a.kill()
                await expect_close(held.ws)
            await admitted_within(b, "solo", PRESENCE_TTL + 5)
    finally:
        redis_server.stop()


async def test_a_dead_instances_members_are_announced_as_leaving_exactly_once(short_presence: Three) -> None:
    a, b, c = short_presence.apps
    watchers: list[Any] = []
    async with (
        connected(b.ws("/ws")) as team_b,
        connected(c.ws("/ws")) as team_c,
        ws_connect(b.ws("/ws/chat?username=bea")) as chat_b,
        ws_connect(c.ws("/ws/room/dead?token=" + user_token("cal"))) as room_c,
        contextlib.AsyncExitStack() as doomed,
    ):
        watchers = [team_b, team_c]
        for proto in watchers:
            await proto.ok("subscribe", channel="team:dead")
        # Members on the instance that will die: a /ws one in a join_leave namespace, a chat
        # member, a room member.
        zed = await doomed.enter_async_context(connected(a.ws("/ws"), user_token("zed", info={"role": "doomed"})))
        await zed.ok("subscribe", channel="team:dead")
        await doomed.enter_async_context(ws_connect(a.ws("/ws/chat?username=zoe")))
        await doomed.enter_async_context(ws_connect(a.ws("/ws/room/dead?token=" + user_token("zak"))))
        await recv_until(chat_b, lambda f: "zoe joined" in str(f.get("message")))
        await recv_until(room_c, lambda f: f.get("type") == "user_joined" and f.get("user") == "Zak")
        for proto in watchers:
            await proto.push(lambda f: f.get("op") == "join" and f["info"]["user"] == "zed")
        a.kill()
        async with asyncio.timeout(PRESENCE_TTL + 5):
            left = await recv_until(chat_b, lambda f: "zoe left" in str(f.get("message")), timeout=PRESENCE_TTL + 5)
            gone = await recv_until(room_c, lambda f: f.get("type") == "user_left", timeout=PRESENCE_TTL + 5)
            for proto in watchers:
                leave = await proto.push(lambda f: f.get("op") == "leave", timeout=PRESENCE_TTL + 5)
                assert (leave["channel"], leave["info"]["user"], leave["info"]["info"]) == (
                    "team:dead",
                    "zed",
                    {"role": "doomed"},
                )
        assert (left["users_online"], gone["user"], gone["members"]) == (1, "Zak", 1)
        # Exactly once: two more seconds, every client read throughout, bring no second announcement.
        pushes = await asyncio.gather(*(proto.quiet(2) for proto in watchers))
        frames = await asyncio.gather(*(read_for(ws, 2) for ws in (chat_b, room_c)))
        for found in pushes:
            assert [f for f in found if f.get("op") == "leave"] == []
        for extra in frames:
            assert [f for f in extra if "left" in str(f)] == []
