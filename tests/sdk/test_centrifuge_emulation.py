"""centrifuge-js over Switchboard's bidirectional emulation, in Node, against two real instances
and redis: the WebSocket is refused, the SDK falls back to ``http_stream`` (or, that refused too,
to ``sse``) on instance A, and every ``POST /emulation`` goes to instance B, which relays it to A
through redis.

``tests/sdk/js/emulation.mjs`` runs both transports and prints what each saw, as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.sdk_support import NAMESPACES
from tests.sdk.test_centrifuge_js import JS, installed
from tests.support import TEST_API_KEY, TEST_SECRET, AppProcess, RedisServer, running

KINDS = ("http_stream", "sse")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    installed()
    workdir = tmp_path_factory.mktemp("centrifuge-emulation")
    config = workdir / "switchboard.toml"
    config.write_text(NAMESPACES)
    redis_server = RedisServer(workdir / "redis").start()
    env = {
        "SWITCHBOARD_BROKER_URL": redis_server.url,
        "SWITCHBOARD_CONFIG": str(config),
        # A ping a second, a pong due within two: pongs relayed through B keep A's streams open.
        "SWITCHBOARD_PING_INTERVAL": "1",
        "SWITCHBOARD_HEARTBEAT_TIMEOUT": "2",
    }
    a, b = AppProcess("emu-a", workdir, env), AppProcess("emu-b", workdir, env)
    try:
        with running(a, b):
            node_env = {
                **os.environ,
                "SB_A": a.http,
                "SB_B": b.http,
                "SB_API_KEY": TEST_API_KEY,
                "SB_SECRET": TEST_SECRET,
            }
            done = subprocess.run(
                ["node", "emulation.mjs"], cwd=JS, env=node_env, capture_output=True, text=True, timeout=90
            )
            assert done.returncode == 0, done.stderr[-4000:]
            found: dict[str, Any] = json.loads(done.stdout)
            found["origins"] = {"a": a.http, "b": b.http}
            yield found
    finally:
        redis_server.stop()


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
