"""Resuming a channel with since/epoch against a real instance (the in-memory broker's history)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.errors import INVALID_RESUME
from tests.integration.conftest import token
from tests.support import AppProcess, expect_close, recv_json, running, ws_connect

QUEUE = 8


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    # A tiny send queue: a recovery must not be mistaken for a slow consumer.
    process = AppProcess("resume", tmp_path_factory.mktemp("resume"), {"SWITCHBOARD_SEND_QUEUE_SIZE": str(QUEUE)})
    with running(process):
        yield process


def publish(app: AppProcess, channel: str, content: object, http: httpx.Client | None = None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token('svc')}"}
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
