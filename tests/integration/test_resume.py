"""Resuming a channel with since/epoch against a real instance (the in-memory broker's history)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from app.errors import AUTH_FAILED, AUTH_REQUIRED, INVALID_RESUME, INVALID_TOKEN
from tests.integration.conftest import token
from tests.support import API_HEADERS, AppProcess, expect_close, positioned, recv_json, running, send_json, ws_connect

QUEUE = 8


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    # A tiny send queue: a recovery must not be mistaken for a slow consumer.
    process = AppProcess("resume", tmp_path_factory.mktemp("resume"), {"SWITCHBOARD_SEND_QUEUE_SIZE": str(QUEUE)})
    with running(process):
        yield process


def publish(app: AppProcess, channel: str, content: object, http: httpx.Client | None = None) -> dict[str, object]:
    headers = API_HEADERS
    url = f"{app.http}/api/global/{channel}"
    response = (http or httpx).post(url, json={"content": content}, headers=headers, timeout=5)
    assert response.status_code == 202, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_large_recovery_is_not_cut_off_by_the_send_queue(app: AppProcess) -> None:
    start = publish(app, "big", "before")
    missed = 600
    with httpx.Client() as http:
        for n in range(missed):
            publish(app, "big", {"n": n, "pad": "x" * 16_000}, http)  # 10 MB: past the sockets' buffers
    url = app.ws(f"/ws/global/big?since={start['offset']}&epoch={start['epoch']}")
    # A client that reads at its own pace (websockets stops reading while 4 frames wait).
    async with ws_connect(url, max_queue=4) as ws:
        got = [await recv_json(ws) for _ in range(missed + 1)]
    assert [f["content"]["n"] for f in got[:missed]] == list(range(missed))
    assert got[-1] == {
        "type": "recovered",
        "ok": True,
        "count": missed,
        "offset": start["offset"] + missed,  # type: ignore[operator]
        "epoch": start["epoch"],
    }


@pytest.mark.parametrize(
    "query", ["since=3", "epoch=abc", "since=-1&epoch=abc", "since=1&epoch=not-hex!", "since=%C2%B2&epoch=ab"]
)
async def test_a_malformed_position_is_refused_with_1008(app: AppProcess, query: str) -> None:
    async with ws_connect(app.ws(f"/ws/global/bad?{query}")) as ws:
        code, reason = await expect_close(ws)
    assert (code, reason) == (1008, INVALID_RESUME)


async def test_resuming_on_chat_recovers_what_was_missed(app: AppProcess) -> None:
    async with ws_connect(app.ws("/ws/chat?username=ann")) as ann:
        mine = await recv_json(ann)
    async with ws_connect(app.ws("/ws/chat?username=bob")) as bob:
        await recv_json(bob)
    url = app.ws(f"/ws/chat?username=ann&since={mine['offset']}&epoch={mine['epoch']}")
    async with ws_connect(url) as ann:
        frames = [await recv_json(ann) for _ in range(5)]
    # Ann's own leave notice comes back too: the live stream excluded her old connection only.
    missed = {"ann left the chat", "bob joined the chat", "bob left the chat"}
    assert {f["message"] for f in frames[:3]} == missed
    assert [f["offset"] for f in frames[:3]] == [mine["offset"] + 1, mine["offset"] + 2, mine["offset"] + 3]
    assert (frames[3]["type"], frames[3]["ok"], frames[3]["count"]) == ("recovered", True, 3)
    assert frames[4]["message"] == "ann joined the chat"  # then the live stream


async def test_resuming_with_history_off_is_answered_not_ignored(tmp_path: Path) -> None:
    with running(AppProcess("nohistory", tmp_path, {"SWITCHBOARD_HISTORY_SIZE": "0"})) as (app,):
        async with ws_connect(app.ws("/ws/global/x?since=1&epoch=ab")) as ws:
            assert await recv_json(ws) == {"type": "recovered", "ok": False, "reason": "history off"}
            assert publish(app, "x", 1) == {"status": "published"}
            assert await recv_json(ws) == {"content": 1, "channel": "x"}  # no offset, no epoch


async def first_message(ws: ClientConnection, **auth: object) -> dict[str, object]:
    assert await recv_json(ws) == {"type": "auth_required"}
    await send_json(ws, {"type": "auth", **auth})
    reply: dict[str, object] = await recv_json(ws)
    return reply


async def test_the_first_message_flow_carries_the_position(app: AppProcess) -> None:
    start = publish(app, "first", "seen")
    for n in range(3):
        publish(app, "first", n)
    async with ws_connect(app.ws("/ws/global/first?auth=first")) as ws:
        auth = {"token": token("u1", "Ann"), "since": start["offset"], "epoch": start["epoch"]}
        assert await first_message(ws, **auth) == {"type": "auth_success", "user": "Ann", "user_id": "u1"}
        frames = [await recv_json(ws) for _ in range(4)]
    assert [f["content"] for f in frames[:3]] == [0, 1, 2]
    assert (frames[3]["type"], frames[3]["ok"], frames[3]["count"]) == ("recovered", True, 3)


async def test_first_message_auth_names_the_sender_in_rooms_and_chat(app: AppProcess) -> None:
    async with (
        ws_connect(app.ws("/ws/room/first-auth")) as listener,
        ws_connect(app.ws("/ws/room/first-auth?auth=first")) as ann,
    ):
        assert (await first_message(ann, token=token("u1", "Ann")))["type"] == "auth_success"
        assert (await recv_json(listener))["user"] == "Ann"  # her join notice names her
        await send_json(ann, {"content": "hi"})
        assert positioned(await recv_json(listener)) == {
            "type": "message",
            "room": "first-auth",
            "content": "hi",
            "from": "Ann",
        }
    async with ws_connect(app.ws("/ws/chat?auth=first&username=ignored")) as bob:
        assert (await first_message(bob, token=token("u2", "Bob")))["type"] == "auth_success"
        assert (await recv_json(bob))["message"] == "Bob joined the chat"


@pytest.mark.parametrize(
    ("auth", "error", "reason"),
    [
        ({"token": "not-a-jwt"}, INVALID_TOKEN, AUTH_FAILED),
        ({"since": 1, "epoch": "ab"}, AUTH_REQUIRED, AUTH_REQUIRED),
    ],
)
async def test_a_bad_first_message_gets_an_error_frame_and_1008(
    app: AppProcess, auth: dict[str, object], error: str, reason: str
) -> None:
    async with ws_connect(app.ws("/ws/global/first-bad?auth=first")) as ws:
        assert await first_message(ws, **auth) == {"type": "error", "message": error}
        assert await expect_close(ws) == (1008, reason)


async def test_a_malformed_position_in_the_first_message_is_refused(app: AppProcess) -> None:
    async with ws_connect(app.ws("/ws/global/first-bad?auth=first")) as ws:
        reply = await first_message(ws, token=token("u1"), since=True, epoch="ab")
        assert reply["type"] == "auth_success"
        assert await expect_close(ws) == (1008, INVALID_RESUME)
