"""The official ``centrifuge`` SDK from npm, in Node, unchanged, against a real ``python -m app``.

``tests/sdk/js`` pins it (package.json and package-lock.json); ``npm ci`` installs it on a clean
clone. ``scenarios.mjs`` runs every scenario at once and prints what each saw, as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.sdk_support import NAMESPACES, REFRESH_GRACE, REFRESH_WAIT_MS, instance, run_node, scenario


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    env = {
        "SWITCHBOARD_REFRESH_GRACE": str(REFRESH_GRACE),
        # on_rpc answers rpc (test_centrifuge_wire.py has none: rpc is 104 there).
        "SWITCHBOARD_HOOKS": "tests.integration.proxy_hooks:hooks",
    }
    with instance(tmp_path_factory.mktemp("centrifuge-js"), NAMESPACES, env, "sdk-js") as app:
        yield run_node("scenarios.mjs", app, {"SB_REFRESH_WAIT_MS": str(REFRESH_WAIT_MS)})


def test_publish_presence_history_join_leave_and_rpc(results: dict[str, Any]) -> None:
    seen = scenario(results, "basics")
    assert seen["data"] == seen["otherData"] == [{"text": "hi"}]
    assert seen["offsets"] == [1]  # offsets start at 1
    assert seen["presenceUsers"] == ["", "jo-two"]
    assert seen["numClients"] == 2
    assert seen["history"] == [[1, {"text": "hi"}]]
    assert seen["rpc"] == {"method": "echo.it", "echo": {"a": 1}, "user": ""}  # the rpc hook's answer
    assert seen["rpcDenied"] == 103  # the hook's Deny
    assert seen["leftIsTheOther"] is True


def test_the_sdk_refreshes_its_token_and_stays_connected(results: dict[str, Any]) -> None:
    seen = scenario(results, "refresh")
    assert seen["issued"] >= 3  # the connect's token, then refreshes before each 2 s expiry
    assert seen["state"] == "connected"
    assert seen["reconnects"] == 1  # only the first connect: no refresh cost a reconnect


def test_subscription_token_message_push_and_a_refused_channel(results: dict[str, Any]) -> None:
    seen = scenario(results, "subscriptionToken")
    assert seen["data"] == [{"from": "api"}]
    assert seen["messages"] == [{"note": 1}]  # the server API's send
    assert seen["denied"] == 103


def test_recovery_after_a_reconnect(results: dict[str, Any]) -> None:
    seen = scenario(results, "recovery")
    assert seen["reconnectCode"] == 4100  # the server API's code, in the close frame
    assert seen["data"] == [1, 2, 3]
    assert seen["offsets"] == [1, 2, 3]
    assert seen["wasRecovering"] is True
    assert seen["recovered"] is True


def test_terminal_disconnects_stop_the_sdk(results: dict[str, Any]) -> None:
    # 4500-4999 and 3500-3999: the SDK stays disconnected; the API's default is 3503.
    assert scenario(results, "terminalDisconnects") == {"jo-stop": 4600, "jo-default": 3503}


def test_interop_with_ws_and_the_server_api(results: dict[str, Any]) -> None:
    seen = scenario(results, "interop")
    everything = [{"from": "sdk"}, {"from": "ws"}, {"from": "api"}]
    assert seen["sdk"] == everything
    assert seen["ws"] == everything


def test_server_side_subscriptions_from_the_server_api(results: dict[str, Any]) -> None:
    seen = scenario(results, "serverSide")
    assert seen["subscribed"] == [["chat:jsserver", True]]
    assert seen["data"] == [["chat:jsserver", {"from": "api"}, 1]]
    assert seen["unsubscribed"] == ["chat:jsserver"]
