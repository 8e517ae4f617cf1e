"""The official ``centrifuge`` SDK's Protobuf build (``centrifuge/build/protobuf``), in Node,
unchanged, against a real ``python -m app``; and what both builds do after each range of
disconnect codes. ``js/protobuf.mjs`` runs every scenario at once and prints what each saw."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.sdk_support import NAMESPACES, PROTOBUF_ENV, instance, run_node, scenario


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with instance(tmp_path_factory.mktemp("centrifuge-js-protobuf"), NAMESPACES, PROTOBUF_ENV, "sdk-js-pb") as app:
        yield run_node("protobuf.mjs", app, {})


def test_publish_presence_history_join_leave_and_rpc_in_protobuf(results: dict[str, Any]) -> None:
    seen = scenario(results, "basics")
    assert seen["data"] == seen["otherData"] == [{"text": "hi"}]
    assert seen["offsets"] == [1]
    assert seen["presenceUsers"] == ["", "pj-two"]
    assert (seen["numClients"], seen["numUsers"]) == (2, 2)  # pj-two, and the anonymous connection
    assert seen["history"] == [[1, {"text": "hi"}]]
    assert seen["rpc"] == {"method": "echo.it", "echo": {"a": 1}, "user": ""}
    assert seen["leftIsTheOther"] is True


def test_subscription_token_message_push_and_refresh_in_protobuf(results: dict[str, Any]) -> None:
    seen = scenario(results, "tokensAndMessages")
    assert seen["data"] == [{"from": "api"}]
    assert seen["messages"] == [{"note": 1}]  # the server API's send
    assert seen["issued"] >= 3
    assert seen["state"] == "connected"
    assert seen["reconnects"] == 1  # only the first connect


def test_recovery_after_a_reconnect_in_protobuf(results: dict[str, Any]) -> None:
    seen = scenario(results, "recovery")
    assert seen["reconnectCode"] == 4100
    assert (seen["data"], seen["offsets"]) == ([1, 2, 3], [1, 2, 3])
    assert (seen["wasRecovering"], seen["recovered"]) == (True, True)


def test_server_side_subscriptions_in_protobuf(results: dict[str, Any]) -> None:
    seen = scenario(results, "serverSide")
    assert seen["subscribed"] == [["chat:pbjsserver", True]]
    assert seen["data"] == [["chat:pbjsserver", {"from": "api"}, 1]]
    assert seen["unsubscribed"] == ["chat:pbjsserver"]


@pytest.mark.parametrize("build", ["protobuf", "json"])
def test_disconnect_codes_reconnect_or_stop_by_range(results: dict[str, Any], build: str) -> None:
    """4000-4499 reconnect; 4500-4999 and 3500-3999 (the API's default 3503) stop, at both ends
    of each range; 3000-3499 reconnect (3005: a token that expired unrefreshed). A bad token at
    connect stops it too: it reports the reply's 101 (unauthorized), before the 3500 close."""
    found = scenario(results, "disconnectCodes")[build]
    assert found == [
        [4005, "reconnect"],
        [4499, "reconnect"],
        [4500, "stop"],
        [4999, "stop"],
        [3503, "stop"],
        [3005, "reconnect"],
        [101, "stop"],
    ]
