"""The connect proxy's ``channels`` on ``/connection/websocket``: each exact name is subscribed by
the server at connect (the reply's ``subs``), as a token's claim is; a pattern only grants. On
``/ws`` the same answer grants and subscribes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.integration.backends import Backend, backend
from tests.support import AppProcess, recv_until, running, ws_connect

CONFIG = """
[namespaces.team]
subscribe = "granted"
history_size = 10
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("connect-subs")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Backend]:
    with backend("tests.integration.proxy_backend:app", workdir) as found:
        yield found


@pytest.fixture(scope="module")
def app(server: Backend, workdir: Path) -> Iterator[AppProcess]:
    config = workdir / "switchboard.toml"
    config.write_text(CONFIG)
    env = {"SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_CONNECT_PROXY_URL": f"{server.url}/connect"}
    with running(AppProcess("connect-subs", workdir, env)) as (found,):
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
