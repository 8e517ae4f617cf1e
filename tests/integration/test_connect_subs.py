"""The connect proxy's ``channels`` on ``/connection/websocket``: each exact name is subscribed by
the server at connect (the reply's ``subs``), as a token's claim is; a pattern only grants. On
``/ws`` the same answer grants and subscribes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from tests.integration.backends import proxied
from tests.support import AppProcess, recv_until, ws_connect

CONFIG = """
[namespaces.team]
subscribe = "granted"
history_size = 10
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    env = {"SWITCHBOARD_CONNECT_PROXY_URL": "{url}/connect"}
    with proxied(tmp_path_factory.mktemp("connect-subs"), "connect-subs", CONFIG, env) as (_, found):
        yield found


async def test_the_connect_proxys_channels_are_subscribed_at_connect(app: AppProcess) -> None:
    data = {"user": "pia", "channels": ["team:pia", "team:*"]}
    async with ws_connect(app.ws("/connection/websocket")) as ws:
        await ws.send(orjson.dumps({"id": 1, "connect": {"data": data}}).decode())
        reply = (await recv_until(ws, lambda f: f.get("id") == 1))["connect"]
        assert list(reply["subs"]) == ["team:pia"]
        assert reply["subs"]["team:pia"]["recoverable"] is True
        # The server's subscription: a second subscribe to it is 105.
        await ws.send('{"id":2,"subscribe":{"channel":"team:pia"}}')
        assert (await recv_until(ws, lambda f: f.get("id") == 2))["error"]["code"] == 105
    async with ws_connect(app.ws("/ws")) as ws:
        await ws.send(orjson.dumps({"id": 1, "op": "connect", "data": data}).decode())
        assert (await recv_until(ws, lambda f: f.get("id") == 1))["ok"] is True
        # Nothing subscribed: the channel is only granted, so the client's own subscribe succeeds.
        await ws.send('{"id":2,"op":"subscribe","channel":"team:pia"}')
        assert (await recv_until(ws, lambda f: f.get("id") == 2))["ok"] is True
