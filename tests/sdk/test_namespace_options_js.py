"""The official ``centrifuge`` SDK from npm, in Node, unchanged, on the personal channel, the token's
channels subscribed at connect (and recovered), ``sub_refresh`` and ``send``: ``js/options.mjs``
runs every scenario at once against a real ``python -m app`` and prints what each saw, as JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.sdk_support import REFRESH_GRACE, REFRESH_WAIT_MS, instance, run_node, scenario
from tests.sdk.test_namespace_options import OPTIONS


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    env = {
        "SWITCHBOARD_REFRESH_GRACE": str(REFRESH_GRACE),
        "SWITCHBOARD_PERSONAL_CHANNEL_NAMESPACE": "personal",
        "SWITCHBOARD_HOOKS": "tests.sdk.send_hooks:hooks",  # keeps what send sends
    }
    with instance(tmp_path_factory.mktemp("namespace-options-js"), OPTIONS, env, "ns-options-js") as app:
        yield run_node("options.mjs", app, {"SB_REFRESH_WAIT_MS": str(REFRESH_WAIT_MS)})


def test_the_personal_channel_gets_a_server_api_publish(results: dict[str, Any]) -> None:
    seen = scenario(results, "personal")
    assert [s["channel"] for s in seen["subscribed"]] == ["personal:#jo-pat"]
    assert seen["data"] == [["personal:#jo-pat", {"for": "jo-pat"}, 1]]


def test_the_token_channels_are_subscribed_at_connect_and_recovered(results: dict[str, Any]) -> None:
    seen = scenario(results, "tokenChannels")
    first, again = seen["subscribed"]
    assert first["wasRecovering"] is False
    assert (again["wasRecovering"], again["recovered"]) == (True, True)
    assert [d for d in seen["data"] if d[0] == "feed:jo"] == [["feed:jo", 1, 1], ["feed:jo", 2, 2], ["feed:jo", 3, 3]]


def test_sub_refresh_keeps_the_subscription(results: dict[str, Any]) -> None:
    seen = scenario(results, "subRefresh")
    assert seen["issued"] >= 3  # the subscribe's token, then sub_refresh before each 2 s expiry
    assert seen["state"] == "subscribed"
    assert (seen["subscribed"], seen["unsubscribed"]) == (1, 0)
    assert seen["data"] == ["still here"]


def test_send_goes_to_the_rpc_hook(results: dict[str, Any]) -> None:
    assert scenario(results, "send")["sent"] == [{"n": 1}, {"n": 2}]
