"""A connection's token after the handshake: a refresh that revokes grants, and expiry everywhere.

``/ws`` re-checks every subscription on ``refresh`` and ends what is no longer allowed with an
``unsub`` push (2001); the tutorial endpoints, which cannot refresh, are closed 1008 when their
token expires, by the same timer that closes ``/ws`` 4002.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from app.auth import mint_token
from app.config import Settings
from app.errors import TOKEN_EXPIRED_REASON, UnsubCode
from tests.integration.wsproto import connected, is_pub
from tests.support import TEST_SECRET, AppProcess, expect_close, recv_json, running, ws_connect

CONFIG = """
[default]
[namespaces.x]
publish = "authenticated"
[namespaces.team]
subscribe = "granted"
publish = "authenticated"
presence = true
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    workdir = tmp_path_factory.mktemp("token-lifecycle")
    (workdir / "switchboard.toml").write_text(CONFIG)
    env = {"SWITCHBOARD_CONFIG": str(workdir / "switchboard.toml"), "SWITCHBOARD_REFRESH_GRACE": "1"}
    with running(AppProcess("token-lifecycle", workdir, env)) as (process,):
        yield process


def token(sub: str, ttl: float = 600, **claims: object) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, sub.title(), ttl, **claims)


async def test_a_refresh_that_revokes_a_grant_ends_that_subscription(app: AppProcess) -> None:
    async with (
        connected(app.ws("/ws"), token("ann", channels=["team:*"])) as ann,
        connected(app.ws("/ws"), token("bob")) as bob,
    ):
        await ann.ok("subscribe", channel="team:a")  # by the claim
        await ann.ok("subscribe", channel="team:b", token=token("ann", channel="team:b"))  # by its own token
        await ann.ok("subscribe", channel="x:open")  # public
        cmd_id = ann.next_id()
        await ann.send({"id": cmd_id, "op": "refresh", "token": token("ann", channels=[])})
        reply = await ann.reply(cmd_id)
        assert reply["ok"] is True, reply
        # Told before the reply, with the documented code; the other two stand.
        unsubs = [p for p in ann.pushes if p.get("op") == "unsub"]
        assert unsubs == [
            {"op": "unsub", "channel": "team:a", "code": UnsubCode.REVOKED, "reason": "permission denied"}
        ], ann.pushes
        for channel in ("team:a", "team:b", "x:open"):
            await bob.ok("publish", channel=channel, data=channel)
        delivered = [p["channel"] for p in await ann.quiet(0.5) if p.get("op") == "pub"]
        assert delivered == ["team:b", "x:open"]
        assert await ann.error("history", channel="team:a") == 103
        assert await ann.error("presence", channel="team:a") == 110
        await ann.ok("presence", channel="team:b")
        # A refresh that grants it again lets ann back in: the check is the subscribe rule itself.
        await ann.ok("refresh", token=token("ann", channels=["team:a"]))
        await ann.ok("subscribe", channel="team:a")
        await bob.ok("publish", channel="team:a", data="again")
        assert (await ann.push(is_pub("team:a")))["data"] == "again"


async def test_tutorial_endpoints_close_1008_when_their_token_expires(app: AppProcess) -> None:
    async def lifetime(path: str, greeting: str | None, auth_first: bool) -> tuple[float, int | None, str]:
        short = token("eve", ttl=3)
        start = time.time()
        async with ws_connect(app.ws(path.format(token=short))) as ws:
            if auth_first:
                assert (await recv_json(ws))["type"] == "auth_required"
                await ws.send(f'{{"type":"auth","token":"{short}"}}')
            if greeting is not None:  # a room member is not told of its own join
                assert (await recv_json(ws))["type"] == greeting
            code, reason = await expect_close(ws, timeout=10)
        return time.time() - start, code, reason

    results = await asyncio.gather(
        lifetime("/ws/secure?token={token}", "auth_success", False),
        lifetime("/ws/room/lifecycle?token={token}", None, False),
        lifetime("/ws/chat?auth=first", "auth_success", True),
    )
    for took, code, reason in results:
        assert (code, reason) == (1008, TOKEN_EXPIRED_REASON)
        assert 1.5 < took < 7  # at exp (3 s, in whole seconds), with no refresh grace
