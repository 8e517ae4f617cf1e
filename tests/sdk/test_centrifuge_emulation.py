"""centrifuge-js over Switchboard's bidirectional emulation, in Node, against two real instances
and redis: the WebSocket is refused, the SDK falls back to ``http_stream`` (or, that refused too,
to ``sse``) on instance A, and every ``POST /emulation`` goes to instance B, which relays it to A
through redis.

``tests/sdk/js/emulation.mjs`` runs both transports and prints what each saw, as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.sdk_support import NAMESPACES, instances, run_node

KINDS = ("http_stream", "sse")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    env = {
        # A ping a second, a pong due within two: pongs relayed through B keep A's streams open.
        "SWITCHBOARD_PING_INTERVAL": "1",
        "SWITCHBOARD_HEARTBEAT_TIMEOUT": "2",
    }
    with instances(tmp_path_factory.mktemp("centrifuge-emulation"), NAMESPACES, env, "emu-a", "emu-b") as (a, b):
        found: dict[str, Any] = run_node("emulation.mjs", None, {"SB_A": a.http, "SB_B": b.http}, timeout=90)
        found["origins"] = {"a": a.http, "b": b.http}
        yield found


def seen(results: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = results[kind]
    assert "error" not in found, found.get("error")
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_the_sdk_falls_back_from_a_refused_websocket_to_the_emulated_transport(
    results: dict[str, Any], kind: str
) -> None:
    # Connected three times (the first connect, then after each cut), each time over the fallback.
    assert seen(results, kind)["transports"] == [kind, kind, kind]


@pytest.mark.parametrize("kind", KINDS)
def test_every_emulation_request_went_to_the_other_instance_and_was_handed_over(
    results: dict[str, Any], kind: str
) -> None:
    found = seen(results, kind)
    assert found["postOrigins"] == [results["origins"]["b"]]  # never A, where the stream is
    assert found["postStatuses"] == [204]


@pytest.mark.parametrize("kind", KINDS)
def test_pongs_sent_to_the_other_instance_keep_the_stream_open(results: dict[str, Any], kind: str) -> None:
    assert seen(results, kind)["connectsAfterPongs"] == 1  # three pings answered, never closed 3012


@pytest.mark.parametrize("kind", KINDS)
def test_subscribe_publish_presence_and_history_over_the_emulated_transport(results: dict[str, Any], kind: str) -> None:
    found = seen(results, kind)
    assert found["presenceUsers"] == [f"jo-{kind}"]
    assert found["numClients"] == 1
    assert found["history"] == [1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_cut_stream_reconnects_and_recovers_what_it_missed(results: dict[str, Any], kind: str) -> None:
    found = seen(results, kind)
    assert found["cutCode"] == 4100  # the server API's code, in the stream's disconnect push
    assert found["wasRecovering"] is True
    assert found["recovered"] is True
    # Then a cut as by the network (the client's side of the stream aborted, no push).
    assert found["networkCutCode"] == 1  # the SDK's own "transport closed"
    assert found["recoveredAfterCut"] is True
    assert found["data"] == [1, 2, 3, 4, 5]
    assert found["offsets"] == [1, 2, 3, 4, 5]
