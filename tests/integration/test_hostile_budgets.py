"""What one hostile socket can make an instance hold or send: in-flight command bytes, join/leave
pushes, history bytes. Real processes (redis-server and ``python -m app``); docs/security.md's
table "What one client can make the cluster do" names each bound and this module's test of it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.auth import mint_token
from app.config import Settings
from tests.integration.test_hostile import RSS_BOUND, RssWatch, metric, raw_websocket
from tests.integration.wsproto import all_connected, connected
from tests.support import API_HEADERS, TEST_SECRET, AppProcess, RedisServer, running, wait_until

CONFIG = """
[default]
[namespaces.lobby]
subscribe = "granted"
publish = "server"
join_leave = true
"""
HISTORY_RATE = 2 * 1024 * 1024  # the test instance's history budget: 2 MiB/s, bursts of 1 MiB
HISTORY_BURST = 1024 * 1024


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[AppProcess]:
    redis_server = RedisServer(tmp_path / "redis").start()
    config = tmp_path / "switchboard.toml"
    config.write_text(CONFIG)
    env = {
        "SWITCHBOARD_BROKER_URL": redis_server.url,
        "SWITCHBOARD_CONFIG": str(config),
        "SWITCHBOARD_WRITE_TIMEOUT": "4",
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "100000",
        "SWITCHBOARD_RATE_LIMIT_BURST": "100000",
        "SWITCHBOARD_HISTORY_BYTES_PER_SECOND": str(HISTORY_RATE),
        "SWITCHBOARD_HISTORY_BYTES_BURST": str(HISTORY_BURST),
    }
    try:
        with running(AppProcess("budgets", tmp_path, env)) as (process,):
            yield process
    finally:
        redis_server.stop()


def text_frame(payload: bytes) -> bytes:
    """A masked client text frame (a zero mask key leaves the payload as it is)."""
    if len(payload) < 126:
        head = bytes((0x81, 0x80 | len(payload)))
    else:
        head = bytes((0x81, 0x80 | 126)) + struct.pack("!H", len(payload))
    return head + b"\x00\x00\x00\x00" + payload


def command(cmd_id: int, op: str, **fields: object) -> bytes:
    return text_frame(orjson.dumps({"id": cmd_id, "op": op, **fields}))


async def fill_history(app: AppProcess, channel: str, count: int, size: int) -> str:
    async with httpx.AsyncClient(base_url=app.http, headers=API_HEADERS, timeout=10) as http:
        for n in range(count):
            response = await http.post("/api/v1/publish", json={"channel": channel, "data": [n, "x" * size]})
            assert response.status_code == 200, response.text
    epoch: str = response.json()["epoch"]
    return epoch


# -- 1. in-flight command bytes ---------------------------------------------------------------


async def hostile_commands(app: AppProcess, epoch: str) -> socket.socket:
    """Resume a long history and never read, so the replay waits in ``drained()``; then pipeline
    31 publishes of 63 KB, each 21,000 empty objects (the most parsed memory per byte sent)."""
    sock = raw_websocket(app.port, "/ws")
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    frames = [command(1, "connect"), command(2, "subscribe", channel="big", since=0, epoch=epoch)]
    data = orjson.loads(b"[" + b",".join([b"{}"] * 21_000) + b"]")
    frames += [command(3 + n, "publish", channel="sink", data=data) for n in range(31)]
    # The server may stop reading (that is the bound): what it never takes stays in our buffers.
    with contextlib.suppress(TimeoutError, OSError):
        await asyncio.wait_for(loop.sock_sendall(sock, b"".join(frames)), 3)
    return sock


async def test_commands_behind_a_stuck_replay_hold_bounded_memory(instance: AppProcess) -> None:
    # 5.8 MB to replay: more than the kernel buffers of a socket (tcp_wmem tops out at 4 MB)
    epoch = await fill_history(instance, "big", 120, 48_000)
    async with RssWatch(instance) as watch:
        sockets = await asyncio.gather(*(hostile_commands(instance, epoch) for _ in range(8)))
        # Every hostile socket is cut off as a slow consumer (WRITE_TIMEOUT 4 s here); sampling
        # goes on until they are all gone, so the bound holds over the attack's whole life.
        wait_until(lambda: metric(instance, "switchboard_slow_consumer_disconnects_total") >= 8, 20, "cut off")
        wait_until(lambda: metric(instance, 'switchboard_connections{endpoint="ws"}') == 0, 10, "sockets gone")
    for sock in sockets:
        sock.close()
    print(f"8 sockets, 31 x 63 KB publishes behind a stuck replay: RSS +{watch.grew / 1e6:.1f} MB")
    assert watch.grew < RSS_BOUND


# -- 2. join/leave pushes ---------------------------------------------------------------------

BURST, PER_SECOND = 3, 0.1  # the defaults: SWITCHBOARD_JOIN_LEAVE_BURST and _PER_SECOND


def token(sub: str, **claims: object) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, sub, 600, **claims)


def about(user: str, channel: str) -> Callable[[dict[str, Any]], str | None]:
    """Classify a watcher's push: "join"/"leave" about ``user`` on ``channel``, else None."""

    def kind(push: dict[str, Any]) -> str | None:
        if push.get("channel") != channel:
            return None
        if push.get("op") in ("join", "leave") and push["info"]["user"] == user:
            return str(push["op"])
        data = push.get("data")  # a tutorial chat notice, as /ws members get it
        if push.get("op") == "pub" and isinstance(data, dict) and data.get("type") == "system":
            message = str(data.get("message"))
            if message.startswith(f"{user} "):
                return "join" if message.endswith(" joined the chat") else "leave"
        return None

    return kind


@pytest.mark.parametrize("channel", ["lobby:1", "chat"], ids=["join_leave namespace", "tutorial chat"])
async def test_join_leave_spam_reaches_watchers_at_the_bucket_rate(instance: AppProcess, channel: str) -> None:
    watchers = [(instance.ws("/ws"), token(f"watcher{n}", channels=["lobby:*"])) for n in range(5)]
    async with all_connected(*watchers) as protos:
        for proto in protos:
            await proto.ok("subscribe", channel=channel)
        # Mallory may only subscribe (a subscription token), never publish; her info is 1.5 KB.
        spam = token("mallory", info={"bio": "m" * 1500})
        async with connected(instance.ws("/ws"), spam) as mallory:
            started = time.monotonic()
            for _ in range(71):
                await mallory.ok("subscribe", channel=channel, token=token("mallory", channel=channel))
                await mallory.ok("unsubscribe", channel=channel)
            elapsed = time.monotonic() - started
            # A well-behaved client, meanwhile: her one join reaches every watcher.
            async with connected(instance.ws("/ws"), token("alice", channels=["lobby:*"])) as alice:
                await alice.ok("subscribe", channel=channel)
                for proto in protos:
                    await proto.push(lambda p: about("alice", channel)(p) == "join")
        kinds = about("mallory", channel)
        allowed = 2 * int(BURST + PER_SECOND * (elapsed + 1))
        for proto in protos:
            seen = [kind for push in await proto.quiet(0.5) if (kind := kinds(push))]
            print(f"{channel}: 71 cycles in {elapsed:.1f} s, a watcher saw {len(seen)} (bound {allowed})")
            assert 2 <= len(seen) <= allowed, seen
            assert seen.count("join") == seen.count("leave"), seen  # every pushed join has its leave
    assert metric(instance, 'switchboard_budget_limited_total{budget="join_leave"}') > 0


# -- 3. history bytes -------------------------------------------------------------------------

PAGE = 1024 * 1024  # SWITCHBOARD_HISTORY_READ_BYTES: the most one read returns


async def test_history_bytes_per_socket_are_bounded_by_the_budget(instance: AppProcess) -> None:
    await fill_history(instance, "feed", 25, 48_000)  # 1.2 MB: each request returns a 1 MiB page
    async with connected(instance.ws("/ws")) as greedy:
        received = refused = 0
        started = time.monotonic()
        while time.monotonic() - started < 2:
            reply = await greedy.call("history", channel="feed", since=0, limit=1000)
            if reply["ok"]:
                received += sum(len(orjson.dumps(p)) for p in reply["publications"])
            else:
                assert reply["error"]["code"] == 112, reply
                refused += 1
        elapsed = time.monotonic() - started
    bound = HISTORY_BURST + HISTORY_RATE * elapsed + PAGE
    print(f"history for {elapsed:.1f} s: {received / 1e6:.1f} MB (bound {bound / 1e6:.1f} MB), {refused} refused")
    assert received <= bound
    assert refused > 0
    assert metric(instance, 'switchboard_budget_limited_total{budget="history_refused"}') == refused


async def test_a_long_replay_is_paced_to_the_budget_and_complete(instance: AppProcess) -> None:
    epoch = await fill_history(instance, "long", 120, 48_000)  # 5.8 MB
    total = 120 * 48_000
    async with connected(instance.ws("/ws")) as resumer:
        started = time.monotonic()
        cmd_id = resumer.next_id()
        await resumer.send({"id": cmd_id, "op": "subscribe", "channel": "long", "since": 0, "epoch": epoch})
        reply = await resumer.reply(cmd_id, timeout=30)
        elapsed = time.monotonic() - started
    assert reply["recovered"] is True, reply
    assert reply["count"] == 120, reply
    assert [p["data"][0] for p in resumer.pushes if p.get("op") == "pub"] == list(range(120))
    print(f"replay of {total / 1e6:.1f} MB took {elapsed:.2f} s")
    # At most a burst and a page beyond the rate: what is left takes that long, whatever the load.
    assert elapsed >= (total - HISTORY_BURST - PAGE) / HISTORY_RATE
    assert metric(instance, 'switchboard_budget_limited_total{budget="replay_paced"}') >= 1


async def test_a_well_behaved_client_is_not_held_back(instance: AppProcess) -> None:
    epoch = await fill_history(instance, "calm", 20, 1000)
    async with connected(instance.ws("/ws"), token("carol", channels=["lobby:*"])) as carol:
        for _ in range(30):  # pages of small history, as a client scrolling back would ask
            reply = await carol.ok("history", channel="calm", limit=20)
            assert len(reply["publications"]) == 20
        await carol.ok("subscribe", channel="calm", since=10, epoch=epoch)
        assert len(await carol.pubs("calm", 10)) == 10
        for n in range(20):  # pipelined publishes, none refused or lost
            await carol.send({"id": 1000 + n, "op": "publish", "channel": "calm", "data": n})
        for n in range(20):
            assert (await carol.reply(1000 + n))["ok"] is True
        assert [p["data"] for p in await carol.pubs("calm", 20)] == list(range(20))
        async with connected(instance.ws("/ws"), token("dave", channels=["lobby:*"])) as dave:
            await dave.ok("subscribe", channel="lobby:2")
            await carol.ok("subscribe", channel="lobby:2")
            await carol.ok("unsubscribe", channel="lobby:2")
            await dave.push(lambda p: about("carol", "lobby:2")(p) == "join")
            await dave.push(lambda p: about("carol", "lobby:2")(p) == "leave")
    for budget in ("history_refused", "replay_paced", "join_leave"):
        assert metric(instance, f'switchboard_budget_limited_total{{budget="{budget}"}}') == 0


async def test_a_paced_replay_does_not_hold_the_commands_after_it(instance: AppProcess) -> None:
    epoch = await fill_history(instance, "long", 120, 48_000)  # at least 1.75 s of pacing here
    resume = {"op": "subscribe", "channel": "long", "since": 0, "epoch": epoch}
    async with connected(instance.ws("/ws")) as client:
        sub_id = client.next_id()
        await client.send({"id": sub_id, **resume})
        await client.ok("subscribe", channel="other")  # answered while the replay is paced
        live = await client.ok("publish", channel="long", data=["live"])
        assert sub_id not in client.replies
        reply = await client.reply(sub_id, timeout=30)
        # Its own publish came during the replay: it is in the history the replay goes on to read.
        assert reply["count"] == 121, reply
        assert live["offset"] == 121
        replayed = [p["offset"] for p in client.pushes if p.get("channel") == "long"]
        assert replayed == list(range(1, 122))  # in order, each once
    async with connected(instance.ws("/ws")) as quitter:
        sub_id = quitter.next_id()
        await quitter.send({"id": sub_id, **resume})
        await quitter.ok("unsubscribe", channel="long")  # ends the replay
        assert (await quitter.reply(sub_id, timeout=10))["error"]["code"] == 110
        quitter.pushes.clear()  # what came before the unsubscribe's reply may; nothing after it
        assert not [p for p in await quitter.quiet(1.0) if p.get("channel") == "long"]
        assert (await quitter.ok("subscribe", channel="long"))["offset"] == 121  # joins afresh
