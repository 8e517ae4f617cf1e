"""``/connection/websocket`` on the wire, with a plain WebSocket client: the frames and close codes
Centrifugo's SDKs rely on, and bad input (docs/sdks.md). The SDKs themselves are driven by
test_centrifuge_python.py and test_centrifuge_js.py."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.sdk.sdk_support import BURST, LIMITS, NAMESPACES, api, instance, token
from tests.support import API_HEADERS, AppProcess, recv_json, recv_until, running, ws_connect


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    env = {
        **LIMITS,
        "SWITCHBOARD_PING_INTERVAL": "1",
        "SWITCHBOARD_HEARTBEAT_TIMEOUT": "1",
        "SWITCHBOARD_USER_CONNECTION_LIMIT": "1",
    }
    with instance(tmp_path_factory.mktemp("centrifuge-wire"), NAMESPACES, env, "wire") as found:
        yield found


async def connected(app: AppProcess, params: dict[str, Any] | None = None) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await ws_connect(app.ws("/connection/websocket"))
    await ws.send(orjson.dumps({"id": 1, "connect": params or {}}).decode())
    reply = await recv_json(ws)
    return ws, reply


async def frame(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The next frame that is not a ping; pings (every second here) are answered."""
    while True:
        found: dict[str, Any] = await recv_json(ws, timeout)
        if found:
            return found
        await ws.send("{}")


async def command(
    ws: ClientConnection, cmd_id: int, method: str, params: dict[str, Any], seen: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Send one command and return its reply; the frames before it go to ``seen``."""
    await ws.send(orjson.dumps({"id": cmd_id, method: params}).decode())
    async with asyncio.timeout(10):
        while (reply := await frame(ws)).get("id") != cmd_id:
            if seen is not None:
                seen.append(reply)
    return reply


async def closed_with(ws: ClientConnection) -> int | None:
    try:
        while True:
            await frame(ws)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_connect_reply_names_the_client_version_and_ping(app: AppProcess) -> None:
    ws, reply = await connected(app, {"name": "test", "version": "1.0", "data": {"x": 1}, "unknown": 1})
    result = reply["connect"]
    assert reply["id"] == 1
    assert result["client"]
    assert result["version"].startswith("switchboard")
    assert result["ping"] == 1
    assert result["pong"] is True
    assert "expires" not in result
    await ws.close()


async def test_server_pings_with_an_empty_object_and_closes_3012_without_a_pong(app: AppProcess) -> None:
    ws, _ = await connected(app)
    assert await recv_json(ws, 5) == {}  # the ping
    await ws.send("{}")  # the pong: the connection stays
    assert await recv_json(ws, 5) == {}
    with pytest.raises(ConnectionClosed) as closed:  # the second ping went unanswered
        await recv_json(ws, 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 3012


async def test_malformed_json_and_a_missing_connect_close_3501(app: AppProcess) -> None:
    ws = await ws_connect(app.ws("/connection/websocket"))
    await ws.send('{"id":1,"subscribe":{"channel":"chat:a"}}')
    assert await closed_with(ws) == 3501
    ws, _ = await connected(app)
    await ws.send('{"id":2,"publish":')
    assert await closed_with(ws) == 3501


async def test_unknown_methods_answer_104_and_unknown_fields_are_ignored(app: AppProcess) -> None:
    ws, _ = await connected(app)
    assert (await command(ws, 2, "frobnicate", {}))["error"]["code"] == 104
    assert (await command(ws, 3, "rpc", {"method": "m", "data": {}}))["error"]["code"] == 104
    reply = await command(ws, 4, "subscribe", {"channel": "chat:f", "tf": {"x": 1}, "delta": "fossil", "flag": 1})
    assert reply["subscribe"]["recoverable"] is True
    assert "delta" not in reply["subscribe"]
    await ws.close()


async def test_subscribing_twice_is_105_and_errors_keep_the_connection(app: AppProcess) -> None:
    ws, _ = await connected(app)
    first = await command(ws, 2, "subscribe", {"channel": "chat:twice"})
    assert first["subscribe"]["offset"] == 0
    assert first["subscribe"]["positioned"] is True
    assert (await command(ws, 3, "subscribe", {"channel": "chat:twice"}))["error"]["code"] == 105
    assert (await command(ws, 4, "subscribe", {"channel": "nope:x"}))["error"]["code"] == 102
    assert (await command(ws, 5, "subscribe", {"channel": "team:x"}))["error"]["code"] == 103
    seen: list[dict[str, Any]] = []
    publish = {"channel": "chat:twice", "data": {"n": 1}}
    assert (await command(ws, 6, "publish", publish, seen)) == {"id": 6, "publish": {}}
    # The push and the reply travel apart (the push comes back through the broker): either first.
    async with asyncio.timeout(5):
        while not any("pub" in f.get("push", {}) for f in seen):
            seen.append(orjson.loads(await ws.recv()))
    pubs = [f["push"]["pub"] for f in seen if "pub" in f.get("push", {})]
    assert pubs == [{"data": {"n": 1}, "offset": 1, "info": {"user": "", "client": pubs[0]["info"]["client"]}}]
    await ws.close()


async def test_ten_thousand_commands_in_one_frame_run_no_further_than_the_rate_limit(app: AppProcess) -> None:
    ws, _ = await connected(app)
    await command(ws, 2, "subscribe", {"channel": "chat:flood"})
    flood = "\n".join(
        orjson.dumps({"id": 10 + n, "publish": {"channel": "chat:flood", "data": n}}).decode() for n in range(10_000)
    )
    await ws.send(flood)
    ok = limited = 0
    try:
        while True:
            reply = await frame(ws)
            if "publish" in reply:
                ok += 1
            elif reply.get("error", {}).get("code") == 111:
                limited += 1
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
    assert code == 3501  # the client kept on past the limit
    # The burst (plus what refills meanwhile) ran; then 111s, until the strikes exceed the burst.
    assert 0 < ok <= BURST + 5, (ok, limited)
    assert limited <= 2 * BURST + 5, (ok, limited)
    history = api(app, "history", {"channel": "chat:flood"})
    assert len(history["publications"]) == ok  # exactly what was answered ok was published


async def test_tokens_invalid_expired_and_over_the_user_limit_close_with_centrifugo_codes(app: AppProcess) -> None:
    ws, reply = await connected(app, {"token": "not-a-jwt"})
    assert reply["error"]["code"] == 101
    assert await closed_with(ws) == 3500
    ws, reply = await connected(app, {"token": token("alice", ttl=-5)})
    assert reply["error"]["code"] == 109
    assert await closed_with(ws) == 3005
    first, reply = await connected(app, {"token": token("carol")})
    assert reply["connect"]["expires"] is True
    assert 0 < reply["connect"]["ttl"] <= 600
    second, reply = await connected(app, {"token": token("carol")})
    assert reply["error"]["code"] == 106
    assert await closed_with(second) == 3504
    await first.close()


async def test_a_server_api_disconnect_closes_with_the_code_given(app: AppProcess) -> None:
    ws, _ = await connected(app, {"token": token("dave")})
    body = {"user": "dave", "code": 4100, "reason": "moved"}
    assert httpx.post(f"{app.http}/api/v1/disconnect", json=body, headers=API_HEADERS, timeout=5).status_code == 200
    assert await closed_with(ws) == 4100
    ws, _ = await connected(app, {"token": token("dave")})
    httpx.post(f"{app.http}/api/v1/disconnect", json={"user": "dave"}, headers=API_HEADERS, timeout=5)
    assert await closed_with(ws) == 3503  # the default: Centrifugo's "force, no reconnect"


async def test_history_limits_as_centrifugo_takes_them(app: AppProcess) -> None:
    for n in range(5):
        body = {"channel": "chat:hist", "data": {"n": n}}
        api(app, "publish", body)
    ws, _ = await connected(app)
    everything = (await command(ws, 2, "history", {"channel": "chat:hist", "limit": -1}))["history"]
    assert [p["offset"] for p in everything["publications"]] == [1, 2, 3, 4, 5]
    assert everything["offset"] == 5
    position = (await command(ws, 3, "history", {"channel": "chat:hist", "limit": 0}))["history"]
    assert position["publications"] == []
    assert position["epoch"] == everything["epoch"]
    since = {"offset": 2, "epoch": everything["epoch"]}
    after = (await command(ws, 4, "history", {"channel": "chat:hist", "limit": 2, "since": since}))["history"]
    assert [p["data"]["n"] for p in after["publications"]] == [2, 3]
    newest = (await command(ws, 5, "history", {"channel": "chat:hist", "limit": 2, "reverse": True}))["history"]
    assert [p["offset"] for p in newest["publications"]] == [5, 4]
    before = {"channel": "chat:hist", "limit": 10, "reverse": True, "since": {"offset": 3, "epoch": since["epoch"]}}
    assert [p["offset"] for p in (await command(ws, 6, "history", before))["history"]["publications"]] == [2, 1]
    wrong = {"channel": "chat:hist", "limit": 1, "since": {"offset": 1, "epoch": "beef"}}
    assert (await command(ws, 7, "history", wrong))["error"]["code"] == 112
    await ws.close()


async def test_recovery_puts_the_missed_publications_in_the_subscribe_reply(app: AppProcess) -> None:
    ws, _ = await connected(app)
    first = (await command(ws, 2, "subscribe", {"channel": "chat:rec", "recoverable": True}))["subscribe"]
    await ws.close()
    for n in range(3):
        body = {"channel": "chat:rec", "data": {"n": n}}
        api(app, "publish", body)
    ws, _ = await connected(app)
    params = {"channel": "chat:rec", "recover": True, "epoch": first["epoch"] or "", "offset": first["offset"]}
    result = (await command(ws, 2, "subscribe", params))["subscribe"]
    assert result["recovered"] is True
    assert result["was_recovering"] is True
    assert result["offset"] == 3
    assert [p["data"]["n"] for p in result["publications"]] == [0, 1, 2]
    assert [p["offset"] for p in result["publications"]] == [1, 2, 3]
    # An unrecoverable position: recovered false, from the top; with the reject flag, error 112.
    lost = {"channel": "chat:rec2", "recover": True, "epoch": "_", "offset": 7}
    assert (await command(ws, 3, "subscribe", lost))["subscribe"]["recovered"] is False
    assert (await command(ws, 4, "subscribe", {**lost, "channel": "chat:rec3", "flag": 2}))["error"]["code"] == 112
    assert (await command(ws, 5, "subscribe", {"channel": "chat:rec3"}))["subscribe"]["offset"] == 0
    await ws.close()


async def test_the_tutorial_chat_and_centrifugo_subscribers_see_each_other(app: AppProcess) -> None:
    ws, _ = await connected(app)
    await command(ws, 2, "subscribe", {"channel": "chat"})
    async with ws_connect(app.ws("/ws/chat?username=Tess")) as tutorial:
        seen: list[dict[str, Any]] = []
        await tutorial.send('{"content":"from the tutorial"}')
        await command(ws, 3, "publish", {"channel": "chat", "data": "from an SDK"}, seen)
        wanted = {("message", "from the tutorial"), ("message", "from an SDK")}

        def texts() -> set[tuple[str, Any]]:
            pubs = [f["push"]["pub"]["data"] for f in seen if "pub" in f.get("push", {})]
            return {(p["type"], p.get("content")) for p in pubs}  # the tutorial's own frames are the data

        async with asyncio.timeout(10):
            while not wanted <= texts():
                seen.append(await frame(ws))
        got = await recv_until(tutorial, lambda f: f.get("content") == "from an SDK")
        assert got["type"] == "message"  # an SDK's publish becomes the chat's own frame
    await ws.close()


async def test_a_drain_closes_3001(tmp_path: Path) -> None:
    instance = AppProcess("drained", tmp_path, {"SWITCHBOARD_DRAIN_SECONDS": "0.5"})
    with running(instance):
        ws, _ = await connected(instance)
        assert instance.proc is not None
        instance.proc.send_signal(signal.SIGTERM)
        assert await closed_with(ws) == 3001  # Centrifugo's shutdown: the SDK reconnects elsewhere


async def test_server_api_subscribe_and_unsubscribe_arrive_as_centrifugo_pushes(app: AppProcess) -> None:
    ws, _ = await connected(app, {"token": token("hank")})
    body = {"user": "hank", "channel": "chat:server-side"}
    assert httpx.post(f"{app.http}/api/v1/subscribe", json=body, headers=API_HEADERS, timeout=5).status_code == 200
    async with asyncio.timeout(10):
        while "subscribe" not in (push := (await frame(ws)).get("push", {})):
            pass
    assert push["channel"] == "chat:server-side"
    assert push["subscribe"]["recoverable"] is True
    httpx.post(f"{app.http}/api/v1/unsubscribe", json=body, headers=API_HEADERS, timeout=5).raise_for_status()
    async with asyncio.timeout(10):
        while "unsubscribe" not in (push := (await frame(ws)).get("push", {})):
            pass
    assert push == {
        "channel": "chat:server-side",
        "unsubscribe": {"code": 2000, "reason": "unsubscribed by the server"},
    }
    await ws.close()


async def test_frames_dropped_by_the_rate_limit_get_one_reply_each_not_one_per_command(app: AppProcess) -> None:
    ws, _ = await connected(app)
    for n in range(BURST + 5):  # one command a frame: the burst is spent by the frames themselves
        await ws.send(orjson.dumps({"id": 10 + n, "frobnicate": {}}).decode())
    for f in range(1, 4):  # then frames of 200 commands, dropped whole by the limit
        await ws.send("\n".join(orjson.dumps({"id": 1000 * f + n, "frobnicate": {}}).decode() for n in range(200)))
    replies = 0
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        async with asyncio.timeout(4):  # what the server answers meanwhile (pings answered)
            while True:
                await frame(ws)
                replies += 1
    # One reply a command that ran, one a dropped frame: never 200 for a dropped frame.
    assert replies <= BURST + 5 + 3 + 20, replies
    await ws.close()
