"""``POST /command`` (app/streams/commands.py) against two real instances and redis: the /ws
command's reply for the token's user, refusals as 4xx JSON with the protocol's codes, and the
per-user command bucket's bound."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import Cluster, token

BURST = 5


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    # A slow refill, so that the bound is the burst during the test.
    return {"SWITCHBOARD_RATE_LIMIT_BURST": str(BURST), "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "0.01"}


def command(base: str, body: object, user: str | None = "http-user", **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token(user)}"} if user else {}
    return httpx.post(f"{base}/command", json=body, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def test_a_published_message_is_in_history_read_on_the_other_instance(cluster: Cluster) -> None:
    sent = command(cluster.a.http, {"op": "publish", "channel": "http:one", "data": {"n": 1}}, "writer")
    assert sent.status_code == 200, sent.text
    reply = sent.json()
    assert reply["ok"] is True
    assert reply["offset"] >= 1
    page = command(cluster.b.http, {"op": "history", "channel": "http:one", "limit": 10}, "reader")
    assert page.status_code == 200, page.text
    assert [p["data"] for p in page.json()["publications"]] == [{"n": 1}]
    stats = command(cluster.b.http, {"op": "presence_stats", "channel": "http:one"}, "reader")
    assert stats.status_code == 200, stats.text
    assert stats.json()["ok"] is True


@pytest.mark.parametrize(
    ("request_body", "status", "code"),
    [
        (b"not json", 400, 107),
        (b"[1, 2]", 400, 107),
        (b'{"op":"subscribe","channel":"x"}', 400, 104),
        (b'{"op":"publish","channel":"x"}', 400, 107),
        (b'{"op":"publish","channel":"switchboard:control","data":1}', 404, 102),
        (b'{"op":"history","channel":"x","limit":0}', 400, 107),
        (b'{"op":"publish","data":"' + b"x" * 70_000 + b'"}', 413, 106),
    ],
)
def test_bad_input_is_a_4xx_json_error_with_a_protocol_code(
    cluster: Cluster, request_body: bytes, status: int, code: int
) -> None:
    headers = {"Authorization": f"Bearer {token('bad-input')}", "Content-Type": "application/json"}
    response = httpx.post(f"{cluster.a.http}/command", content=request_body, headers=headers, timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_not_a_post_and_a_bad_token_are_refused(cluster: Cluster) -> None:
    got = httpx.get(f"{cluster.a.http}/command", timeout=10)
    assert (got.status_code, got.json()["error"]["code"], got.headers["allow"]) == (405, 107, "POST")
    bad = httpx.post(
        f"{cluster.a.http}/command",
        json={"op": "publish", "channel": "x", "data": 1},
        headers={"Authorization": "Bearer nope"},
        timeout=10,
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (401, 101)


def test_a_user_sends_at_most_its_burst_of_commands(cluster: Cluster) -> None:
    body = {"op": "publish", "channel": "http:rate", "data": "x"}
    statuses = [command(cluster.a.http, body, "busy").status_code for _ in range(BURST + 5)]
    assert statuses == [200] * BURST + [429] * 5
    # Another user has a bucket of its own.
    assert command(cluster.a.http, body, "calm").status_code == 200
