"""The /ws protocol, row by row of docs/protocol.md, on two instances sharing a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from app.auth import mint_token
from app.config import Settings
from app.protocols.switchboard_codec import HEADER_HINT
from tests.integration.conftest import Cluster
from tests.integration.wsproto import Proto, connected, is_pub
from tests.support import TEST_SECRET, AppProcess, expect_close, recv_until, running, wait_until, ws_connect

CONFIG = """
[default]
[namespaces.x]
[namespaces.news]
publish = "server"
[namespaces.dm]
subscribe = "authenticated"
[namespaces.team]
subscribe = "granted"
publish = "granted"
join_leave = true
[namespaces.hooked]
subscribe = "granted"
[namespaces.nohist]
history_size = 0
presence = false
[namespaces.global]
publish = "granted"
"""


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path: Path = tmp_path_factory.mktemp("ws-config") / "switchboard.toml"
    path.write_text(CONFIG)
    return {
        "SWITCHBOARD_CONFIG": str(path),
        "SWITCHBOARD_HOOKS": "tests.integration.ws_hooks:hooks",
        "SWITCHBOARD_HOOK_TIMEOUT": "0.5",
        "SWITCHBOARD_MAX_CHANNELS_PER_CONNECTION": "5",
        "SWITCHBOARD_MAX_MESSAGE_BYTES": "4096",
        "SWITCHBOARD_PING_INTERVAL": "1",
        "SWITCHBOARD_HEARTBEAT_TIMEOUT": "1",
        "SWITCHBOARD_REFRESH_GRACE": "1",
        "SWITCHBOARD_AUTH_TIMEOUT": "1",
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "20",
        "SWITCHBOARD_RATE_LIMIT_BURST": "60",
    }


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def sub_token(sub: str, channel: str, ttl: float = 600) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, None, ttl, channel=channel)


def user_token(sub: str, ttl: float = 600, **claims: Any) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, sub.title(), ttl, **claims)


# -- connecting ------------------------------------------------------------------------------------


async def test_connect_reply_names_client_user_expiry_and_ping(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws")) as ws:
        proto = Proto(ws)
        reply = await proto.ok("connect", token=user_token("ann", ttl=300))
        assert reply["user"] == "ann"
        assert isinstance(reply["client"], str)
        assert reply["client"]
        assert reply["ping"] == 1
        assert isinstance(reply["expires"], int)
    async with connected(cluster.b.ws("/ws")) as anonymous:
        assert anonymous.ws.response is not None
    async with ws_connect(cluster.a.ws(f"/ws?token={user_token('bob')}")) as ws:  # non-browser: query token
        assert (await Proto(ws).ok("connect"))["user"] == "bob"


async def test_a_token_where_connect_never_reads_one_gets_a_hint(tmp_path: Path) -> None:
    """A Bearer header on the handshake, or the token under another name, is anonymous: the reply
    says why (and a debug line in the log), never echoing the token."""
    jwt = user_token("ann")
    env = {"SWITCHBOARD_LOG_LEVEL": "debug"}
    closed = AppProcess("closed", tmp_path, {"SWITCHBOARD_ALLOW_ANONYMOUS": "false"})
    with running(AppProcess("hints", tmp_path, env), closed) as (app, _):
        # Where anonymous connections are refused, the refusal says why.
        async with ws_connect(closed.ws("/ws"), additional_headers={"Authorization": f"Bearer {jwt}"}) as ws:
            reply = await Proto(ws).call("connect")
        assert reply["error"] == {"code": 101, "message": "token required", "hint": HEADER_HINT}
        async with ws_connect(app.ws("/ws"), additional_headers={"Authorization": f"Bearer {jwt}"}) as ws:
            reply = await Proto(ws).ok("connect")
        assert (reply["user"], reply["hint"]) == ("", HEADER_HINT)
        async with ws_connect(app.ws("/ws")) as ws:
            reply = await Proto(ws).ok("connect", jwt=jwt, **{"x\u001b[31m": 1})
        assert reply["user"] == ""
        assert reply["hint"] == 'connect reads only "token"; ignored: jwt, x\u001b[31m'
        async with ws_connect(app.ws("/ws"), additional_headers={"Authorization": f"Bearer {jwt}"}) as ws:
            reply = await Proto(ws).ok("connect", token=jwt)
        assert reply["user"] == "ann"
        async with ws_connect(app.ws("/ws")) as ws:
            assert "hint" not in await Proto(ws).ok("connect", token=jwt)
        wait_until(lambda: "ignored fields 'jwt', 'x\\x1b[31m'" in app.log_text(), 5, "the debug line")
        log = app.log_text()
    assert "the handshake's Authorization header is ignored on /ws" in log
    assert jwt not in log
    assert "\u001b" not in log


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"id": 1, "op": "connect", "token": "not-a-jwt"}, 101),
        ({"id": 1, "op": "connect", "token": "expired"}, 109),
        ({"id": 1, "op": "connect", "token": "banned"}, 103),  # the hook refuses
        ({"id": 1, "op": "subscribe", "channel": "x:a"}, 101),  # any other op first
        ({"op": "connect"}, 107),  # no id
    ],
)
async def test_a_failed_connect_is_an_error_reply_then_1008(
    cluster: Cluster, first: dict[str, object], code: int
) -> None:
    if first.get("token") == "expired":
        first["token"] = user_token("ann", ttl=-10)
    elif first.get("token") == "banned":
        first["token"] = user_token("banned")
    async with ws_connect(cluster.a.ws("/ws")) as ws:
        proto = Proto(ws)
        await proto.send(first)
        reply = await proto.reply(first.get("id"))  # type: ignore[arg-type]
        assert reply["ok"] is False
        assert reply["error"]["code"] == code
        close, _ = await expect_close(ws)
        assert close == 1008


async def test_no_connect_in_time_closes_1008_and_a_second_connect_is_107(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws")) as ws:
        code, reason = await expect_close(ws, timeout=5)
        assert (code, reason) == (1008, "Authentication timeout")
    async with connected(cluster.a.ws("/ws")) as proto:
        assert await proto.error("connect") == 107
        assert (await proto.ok("subscribe", channel=unique("x:")))["ok"]  # still usable


# -- commands and pushes across instances ---------------------------------------------------------


async def test_publish_reaches_every_subscriber_on_both_instances_in_order(cluster: Cluster) -> None:
    channel = unique("x:c")
    async with connected(cluster.a.ws("/ws"), user_token("ann")) as ann, connected(cluster.b.ws("/ws")) as anon:
        first = await ann.ok("subscribe", channel=channel)
        assert first["channel"] == channel
        assert (first["offset"], first["epoch"]) == (0, "")  # never published: no epoch yet
        await anon.ok("subscribe", channel=channel)
        offsets, epochs = [], set()
        for n in range(5):
            reply = await anon.ok("publish", channel=channel, data={"n": n})
            offsets.append(reply["offset"])
            epochs.add(reply["epoch"])
        assert offsets == [1, 2, 3, 4, 5]
        assert len(epochs) == 1
        assert "" not in epochs
        for proto in (ann, anon):  # the publisher's own connection gets its publications too
            pubs = await proto.pubs(channel, 5)
            assert [p["data"] for p in pubs] == [{"n": n} for n in range(5)]
            assert [p["offset"] for p in pubs] == offsets
            assert {p["info"]["user"] for p in pubs} == {""}
            assert {p["info"]["client"] for p in pubs} == {pubs[0]["info"]["client"]}


async def test_a_retry_with_the_same_idempotency_key_on_another_instance_publishes_nothing(cluster: Cluster) -> None:
    """The same user, reconnected to another instance, is the same publisher (keys are per publisher)."""
    channel = unique("x:idem")
    ida = user_token("ida")
    async with connected(cluster.a.ws("/ws"), ida) as one, connected(cluster.b.ws("/ws"), ida) as two:
        for proto in (one, two):
            await proto.ok("subscribe", channel=channel)
        first = await one.ok("publish", channel=channel, data="once", idempotency_key="order-17")
        retry = await two.ok("publish", channel=channel, data="once", idempotency_key="order-17")
        assert (retry["offset"], retry["epoch"]) == (first["offset"], first["epoch"])
        other = await two.ok("publish", channel=channel, data="twice", idempotency_key="order-18")
        assert other["offset"] == first["offset"] + 1
        for proto in (one, two):
            assert [p["data"] for p in await proto.pubs(channel, 2)] == ["once", "twice"]
            assert [p for p in await proto.quiet(0.3) if is_pub(channel)(p)] == []
        assert await one.error("publish", channel=channel, data=1, idempotency_key="") == 107
        assert await one.error("publish", channel=channel, data=1, idempotency_key="a b") == 107


async def test_idempotency_holds_in_a_namespace_without_history(cluster: Cluster) -> None:
    channel = unique("nohist:")
    ida = user_token("ida")
    async with connected(cluster.a.ws("/ws"), ida) as one, connected(cluster.b.ws("/ws"), ida) as two:
        for proto in (one, two):
            await proto.ok("subscribe", channel=channel)
        for proto in (one, two, one):
            reply = await proto.ok("publish", channel=channel, data="once", idempotency_key="k1")
            assert (reply["offset"], reply["epoch"]) == (0, "")
        await two.ok("publish", channel=channel, data="end", idempotency_key="k2")
        for proto in (one, two):
            assert [p["data"] for p in await proto.pubs(channel, 2)] == ["once", "end"]


async def test_many_channels_on_one_socket_and_unsubscribe_stops_pushes(cluster: Cluster) -> None:
    channels = [unique("x:m") for _ in range(3)]
    async with connected(cluster.a.ws("/ws")) as reader, connected(cluster.b.ws("/ws")) as writer:
        for channel in channels:
            await reader.ok("subscribe", channel=channel)
            await writer.ok("subscribe", channel=channel)
        for channel in channels:
            await writer.ok("publish", channel=channel, data=channel)
        for channel in channels:
            assert (await reader.push(is_pub(channel)))["data"] == channel
        assert await reader.ok("unsubscribe", channel=channels[0]) == {"id": reader._next, "ok": True}
        await writer.ok("publish", channel=channels[0], data="gone")
        await writer.ok("publish", channel=channels[1], data="still here")
        assert (await reader.push(is_pub(channels[1])))["data"] == "still here"
        assert [p for p in await reader.quiet(0.3) if p.get("channel") == channels[0]] == []


async def test_history_latest_and_since(cluster: Cluster) -> None:
    channel = unique("x:h")
    async with connected(cluster.a.ws("/ws")) as proto:
        await proto.ok("subscribe", channel=channel)
        for n in range(6):
            await proto.ok("publish", channel=channel, data=n)
        latest = await proto.ok("history", channel=channel, limit=2)
        assert [p["data"] for p in latest["publications"]] == [4, 5]
        assert latest["offset"] == 6
        assert latest["publications"][0]["op"] == "pub"
        after = await proto.ok("history", channel=channel, since=2)
        assert [p["offset"] for p in after["publications"]] == [3, 4, 5, 6]
        assert await proto.error("history", channel=channel, limit=0) == 107
        assert await proto.error("history", channel=unique("nohist:")) == 108


async def test_presence_and_stats_count_clients_and_distinct_users_across_instances(cluster: Cluster) -> None:
    channel = unique("x:p")
    ann = user_token("ann", info={"color": "red"})
    async with (
        connected(cluster.a.ws("/ws"), ann) as one,
        connected(cluster.b.ws("/ws"), ann) as two,
        connected(cluster.b.ws("/ws")) as anon,
    ):
        for proto in (one, two, anon):
            await proto.ok("subscribe", channel=channel)
        stats = await anon.ok("presence_stats", channel=channel)
        assert (stats["clients"], stats["users"]) == (3, 1)
        clients = (await one.ok("presence", channel=channel))["clients"]
        assert sorted(c["user"] for c in clients) == ["", "ann", "ann"]
        first = await one.ok("presence", channel=channel, limit=2)
        rest = await one.ok("presence", channel=channel, limit=2, cursor=first["cursor"])
        assert (len(first["clients"]), len(rest["clients"]), rest["cursor"]) == (2, 1, None)
        assert {c["client"] for c in first["clients"] + rest["clients"]} == {c["client"] for c in clients}
        assert await one.error("presence", channel=channel, cursor="nope") == 107
        assert {"color": "red"} in [c["info"] for c in clients]
        assert await one.error("presence_stats", channel=unique("x:not-in")) == 110
        nohist = unique("nohist:")
        await one.ok("subscribe", channel=nohist)
        assert await one.error("presence_stats", channel=nohist) == 108


async def test_join_and_leave_pushes_carry_the_members_info(cluster: Cluster) -> None:
    channel = unique("team:")
    grant: dict[str, Any] = {"channels": ["team:*"], "info": {"role": "lead"}}
    async with connected(cluster.a.ws("/ws"), user_token("ann", **grant)) as ann:
        await ann.ok("subscribe", channel=channel)
        async with connected(cluster.b.ws("/ws"), user_token("bob", channels=[channel])) as bob:
            bob_sub = await bob.ok("subscribe", channel=channel)
            assert bob_sub["ok"]
            joined = await ann.push(lambda f: f.get("op") == "join" and f["info"]["user"] == "bob")
            assert joined["channel"] == channel
            assert set(joined["info"]) == {"client", "user", "info"}
        left = await ann.push(lambda f: f.get("op") == "leave")
        assert left["info"]["user"] == "bob"
    async with connected(cluster.a.ws("/ws"), user_token("cat")) as cat:
        assert await cat.error("subscribe", channel=unique("team:")) == 103  # no grant


async def test_refresh_moves_the_expiry_and_keeps_the_socket(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws"), user_token("ann", ttl=1)) as ann:
        fresh = user_token("ann", ttl=600)
        reply = await ann.ok("refresh", token=fresh)
        assert reply["expires"] > 1e9
        assert await ann.error("refresh", token=user_token("bob")) == 103
        assert await ann.error("refresh", token=user_token("ann", ttl=-5)) == 109
        assert await ann.error("refresh", token=7) == 107
        await ann.quiet(2.5)  # past the first token's expiry and grace: still open
        await ann.ok("subscribe", channel=unique("x:r"))


async def test_an_expired_token_not_refreshed_closes_4002(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws"), user_token("ann", ttl=1)) as ann:
        code, _ = await expect_close(ann.ws, timeout=6)
        assert code == 4002


async def test_pings_are_pushed_and_a_client_that_never_pongs_is_closed_4001(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws")) as ws:
        proto = Proto(ws, answer_pings=False)
        await proto.ok("connect")
        assert await proto.push(lambda f: f.get("op") == "ping", timeout=3) == {"op": "ping"}
        code, _ = await expect_close(ws, timeout=4)
        assert code == 4001
    async with connected(cluster.a.ws("/ws")) as answering:  # answers pings: stays open
        await answering.quiet(3.5)
        await answering.ok("subscribe", channel=unique("x:alive"))


# -- permissions -----------------------------------------------------------------------------------


async def test_server_namespaces_refuse_client_publishes(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws"), user_token("ann", channels=["*"])) as ann:
        channel = unique("news:")
        await ann.ok("subscribe", channel=channel)
        assert await ann.error("publish", channel=channel, data="hi") == 103


async def test_granted_by_claim_glob_or_subscription_token(cluster: Cluster) -> None:
    channel = unique("team:")
    async with connected(cluster.a.ws("/ws"), user_token("ann", channels=["team:*"])) as ann:
        await ann.ok("subscribe", channel=channel)
        await ann.ok("publish", channel=channel, data="granted")
    async with connected(cluster.b.ws("/ws"), user_token("bob", channels=["team:other"])) as bob:
        assert await bob.error("subscribe", channel=channel) == 103
        assert await bob.error("subscribe", channel=channel, token=sub_token("bob", channel, ttl=-5)) == 109
        assert await bob.error("subscribe", channel=channel, token=sub_token("ann", channel)) == 103
        assert await bob.error("subscribe", channel=channel, token=sub_token("bob", channel + "x")) == 103
        assert await bob.error("subscribe", channel=channel, token=user_token("bob")) == 103
        assert await bob.error("subscribe", channel=channel, token="garbage") == 101
        await bob.ok("subscribe", channel=channel, token=sub_token("bob", channel))
        # A subscription token grants subscribe only; publishing needs the claim.
        assert await bob.error("publish", channel=channel, data="no") == 103


async def test_a_subscription_token_is_not_a_connection_token(cluster: Cluster) -> None:
    async with ws_connect(cluster.a.ws("/ws")) as ws:
        reply = await Proto(ws).call("connect", token=sub_token("ann", "team:x"))
        assert reply["error"]["code"] == 101


async def test_user_limited_channels_admit_only_their_users(cluster: Cluster) -> None:
    channel = f"dm:#ann,{unique('bob')}"
    bob = channel.split(",")[1]
    async with (
        connected(cluster.a.ws("/ws"), user_token("ann")) as ann,
        connected(cluster.b.ws("/ws"), user_token(bob)) as b,
    ):
        await ann.ok("subscribe", channel=channel)
        await b.ok("subscribe", channel=channel)
        await b.ok("publish", channel=channel, data="psst")
        assert (await ann.push(is_pub(channel)))["data"] == "psst"
    async with connected(cluster.a.ws("/ws"), user_token("cat", channels=["*"])) as cat:
        assert await cat.error("subscribe", channel=channel) == 103
        assert await cat.error("publish", channel=channel, data="x") == 103
    async with connected(cluster.a.ws("/ws")) as anon:
        assert await anon.error("subscribe", channel=unique("dm:")) == 103  # authenticated namespace


async def test_the_hook_allows_denies_replaces_and_fails_closed(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws"), user_token("ann")) as ann:
        await ann.ok("subscribe", channel="hooked:allow")  # a granted namespace: the hook grants
        denied = await ann.call("subscribe", channel="hooked:deny")
        assert denied["error"] == {"code": 103, "message": "not today"}
        assert await ann.error("subscribe", channel="hooked:raise") == 100
        assert await ann.error("subscribe", channel="hooked:hang") == 100
        assert await ann.error("subscribe", channel="hooked:other") == 103  # no opinion: namespace rule
        await ann.ok("subscribe", channel="x:shout")
        await ann.ok("publish", channel="x:shout", data="quiet please")
        assert (await ann.push(is_pub("x:shout")))["data"] == "QUIET PLEASE"
    text = httpx.get(cluster.a.http + "/metrics", timeout=5).text
    assert 'switchboard_hook_failures_total{hook="on_subscribe"} 2.0' in text


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"op": "nope"}, 104),
        ({"op": "subscribe", "channel": ""}, 107),
        ({"op": "subscribe", "channel": "x:" + "a" * 129}, 107),
        ({"op": "subscribe", "channel": "x:a\x01b"}, 107),
        ({"op": "subscribe", "channel": "x:ab\n"}, 107),
        ({"op": "subscribe", "channel": 5}, 107),
        ({"op": "subscribe", "channel": "nowhere:a"}, 102),
        ({"op": "subscribe", "channel": "x:a", "since": 3}, 107),
        ({"op": "subscribe", "channel": "x:a", "since": "3", "epoch": "abc"}, 107),
        ({"op": "subscribe", "channel": "x:a", "since": -1, "epoch": "abc"}, 107),
        ({"op": "subscribe", "channel": "x:a", "token": 5}, 107),
        ({"op": "unsubscribe", "channel": "x:never"}, 110),
        ({"op": "publish", "channel": "x:a"}, 107),
        ({"op": "publish", "channel": "x:a", "data": "not subscribed"}, 103),
        ({"op": "history", "channel": "x:a", "since": "x"}, 107),
    ],
)
async def test_bad_commands_get_their_code_and_the_socket_stays_usable(
    cluster: Cluster, command: dict[str, object], code: int
) -> None:
    async with connected(cluster.a.ws("/ws")) as proto:
        assert await proto.error(str(command.pop("op")), **command) == code
        await proto.ok("subscribe", channel=unique("x:after"))


async def test_ids_must_be_positive_integers_and_unique_while_in_flight(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws"), user_token("ann")) as proto:
        for bad in ({"op": "subscribe"}, {"op": "subscribe", "id": "7"}, {"op": "subscribe", "id": 0}):
            await proto.send({**bad, "channel": "x:a"})
            reply = await proto.reply(None)
            assert reply["error"]["code"] == 107
        await proto.send({"id": 40, "op": "subscribe", "channel": "hooked:hang"})  # takes the hook timeout
        await proto.send({"id": 40, "op": "subscribe", "channel": "x:dup"})
        duplicate = await proto.reply(40)
        assert duplicate["error"] == {"code": 107, "message": "duplicate id: that command is in flight"}
        assert (await proto.reply(40))["error"]["code"] == 100
        await proto.ok("subscribe", channel=unique("x:after"))


async def test_commands_over_the_rate_limit_get_111_with_their_id(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws")) as proto:
        ids = [proto.next_id() for _ in range(90)]
        for cmd_id in ids:  # one write each, as fast as the socket takes them
            await proto.send({"id": cmd_id, "op": "unsubscribe", "channel": "x:none"})
        codes = [(await proto.reply(cmd_id))["error"]["code"] for cmd_id in ids]
        assert set(codes) == {110, 111}
        assert codes.count(110) >= 59  # the burst (60, less what connect took), then the limit
        assert codes.count(111) >= 25
        await asyncio.sleep(1)  # the bucket refills: usable again
        await proto.ok("subscribe", channel=unique("x:after"))


async def test_subscribing_twice_is_105_and_the_channel_limit_is_106(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws")) as proto:
        channels = [unique("x:l") for _ in range(5)]
        for channel in channels:
            await proto.ok("subscribe", channel=channel)
        assert await proto.error("subscribe", channel=channels[0]) == 105
        limited = await proto.call("subscribe", channel=unique("x:l"))
        assert limited["error"] == {"code": 106, "message": "at most 5 channels per connection"}
        await proto.ok("unsubscribe", channel=channels[0])
        await proto.ok("subscribe", channel=unique("x:l"))  # room again


async def test_oversized_and_too_deep_data_are_errors_never_1011(cluster: Cluster) -> None:
    channel = unique("x:big")
    async with connected(cluster.a.ws("/ws")) as proto:
        await proto.ok("subscribe", channel=channel)
        # The frame fits in 4096 bytes, the publication (with channel, info, position) does not.
        fill = 4096 - len(orjson.dumps({"id": proto._next + 1, "op": "publish", "channel": channel, "data": ""}))
        assert await proto.error("publish", channel=channel, data="a" * fill) == 106
        # Parses (orjson reads 1024 levels) but is deeper than the encoder writes (254).
        deep = "[" * 300 + "]" * 300
        await proto.ws.send(f'{{"id":500,"op":"publish","channel":"{channel}","data":{deep}}}')
        assert (await proto.reply(500))["error"]["code"] == 107
        await proto.ok("publish", channel=channel, data="fine")
        await proto.send({"id": 999, "op": "publish", "channel": channel, "data": "a" * 5000})
        code, _ = await expect_close(proto.ws)
        assert code == 1009  # a frame over the limit is the one case that closes


async def test_non_json_frames_get_107_and_binary_frames_close_1003(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws")) as proto:
        await proto.ws.send("not json")
        assert (await proto.reply(None))["error"]["code"] == 107
        await proto.ws.send("[1,2]")
        assert (await proto.reply(None))["error"]["code"] == 107
        await proto.ok("subscribe", channel=unique("x:ok"))
        await proto.ws.send(b"\x00binary")
        code, _ = await expect_close(proto.ws)
        assert code == 1003


# -- interop with the tutorial endpoints ----------------------------------------------------------


async def test_room_clients_and_ws_clients_see_each_other(cluster: Cluster) -> None:
    room = unique("r")
    channel = f"room:{room}"
    async with connected(cluster.a.ws("/ws"), user_token("ann")) as ann:
        await ann.ok("subscribe", channel=channel)
        async with ws_connect(cluster.b.ws(f"/ws/room/{room}")) as tutorial:
            joined = await ann.push(is_pub(channel))
            assert joined["data"]["type"] == "user_joined"
            assert joined["data"]["offset"] == joined["offset"]  # the tutorial frame, unchanged
            await tutorial.send(orjson.dumps({"content": "from the tutorial"}).decode())
            mine = await ann.push(is_pub(channel))
            assert {k: mine["data"][k] for k in ("type", "room", "content")} == {
                "type": "message",
                "room": room,
                "content": "from the tutorial",
            }
            await ann.ok("publish", channel=channel, data="from /ws")
            # Ann's own join announcement is published after her subscribe reply, so it may reach
            # the tutorial client too (it joined while the announcement was on its way).
            frame = await _recv_where(tutorial, lambda f: f.get("type") == "message")
            assert {k: frame[k] for k in ("type", "room", "content", "from")} == {
                "type": "message",
                "room": room,
                "content": "from /ws",
                "from": "Ann",
            }


async def test_a_ws_member_is_announced_to_tutorial_clients_in_their_frames(cluster: Cluster) -> None:
    room = unique("r")
    async with ws_connect(cluster.a.ws(f"/ws/room/{room}")) as tutorial:
        cluster.wait_presence(f"room:{room}", 1)
        async with connected(cluster.b.ws("/ws"), user_token("ann")) as ann:
            await ann.ok("subscribe", channel=f"room:{room}")
            joined = await _recv_where(tutorial, lambda f: f.get("type") == "user_joined")
            assert (joined["user"], joined["members"]) == ("Ann", 2)
            await ann.ok("unsubscribe", channel=f"room:{room}")
            left = await _recv_where(tutorial, lambda f: f.get("type") == "user_left")
            assert (left["user"], left["members"]) == ("Ann", 1)


async def test_chat_interop_in_the_chat_frame_shape(cluster: Cluster) -> None:
    async with connected(cluster.a.ws("/ws")) as proto:
        await proto.ok("subscribe", channel="chat")
        async with ws_connect(cluster.b.ws("/ws/chat?username=zed")) as tutorial:
            system = await proto.push(lambda f: is_pub("chat")(f) and "zed joined" in str(f["data"].get("message")))
            assert system["data"]["type"] == "system"
            await proto.ok("publish", channel="chat", data="hello zed")
            frame = await _recv_where(tutorial, lambda f: f.get("type") == "message")
            assert (frame["from"], frame["content"]) == ("Anonymous", "hello zed")


async def test_global_interop_and_the_tutorial_endpoint_obeys_the_namespace(cluster: Cluster) -> None:
    name = unique("g")
    channel = f"global:{name}"
    async with connected(cluster.a.ws("/ws"), user_token("ann", channels=["global:*"])) as ann:
        await ann.ok("subscribe", channel=channel)
        async with ws_connect(cluster.b.ws(f"/ws/global/{name}")) as tutorial:
            await asyncio.sleep(0.2)  # no join frame on global: give the subscription a moment
            await ann.ok("publish", channel=channel, data="announcement")
            frame = await _recv_where(tutorial, lambda f: "content" in f)
            assert (frame["content"], frame["channel"]) == ("announcement", name)
            # `global` is publish = "granted" here: the anonymous tutorial client is refused.
            await tutorial.send(orjson.dumps({"content": "spoof"}).decode())
            refused = await _recv_where(tutorial, lambda f: f.get("type") == "error")
            assert refused["code"] == 103
            assert refused["message"].startswith("Permission denied")
        assert [p for p in await ann.quiet(0.3) if p.get("data", {}).get("content") == "spoof"] == []


async def _recv_where(ws: ClientConnection, predicate: Callable[[Any], bool]) -> dict[str, Any]:
    found: dict[str, Any] = await recv_until(ws, predicate)
    return found
