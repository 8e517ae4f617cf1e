"""docs/proxies.md as written: its two FastAPI backends run under uvicorn, its namespaces file and
its rpc hook configure a real instance, and a client sees what the page says it sees."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docs_examples import example
from tests.integration.backends import Backend, backend
from tests.integration.wsproto import Proto, is_pub
from tests.support import AppProcess, expect_close, running, ws_connect

PAGE = "docs/proxies.md"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docs-proxies")
    (path / "cookie_backend.py").write_text(example(PAGE, "cookie-backend"))
    (path / "decisions_backend.py").write_text(example(PAGE, "decisions-backend"))
    (path / "docs_rpc_hooks.py").write_text(example(PAGE, "rpc-hook"))
    return path


@pytest.fixture(scope="module")
def cookies(workdir: Path) -> Iterator[Backend]:
    with backend("cookie_backend:app", workdir, cwd=workdir) as found:
        yield found


@pytest.fixture(scope="module")
def app(workdir: Path, cookies: Backend) -> Iterator[AppProcess]:
    with backend("decisions_backend:app", workdir, cwd=workdir) as decisions:
        config = workdir / "switchboard.toml"
        config.write_text(example(PAGE, "proxies-toml").replace("127.0.0.1:9001", f"127.0.0.1:{decisions.port}"))
        env = {
            "SWITCHBOARD_CONFIG": str(config),
            "SWITCHBOARD_HOOKS": "docs_rpc_hooks:hooks",
            "PYTHONPATH": os.pathsep.join([str(workdir), os.environ.get("PYTHONPATH", "")]),
            "SWITCHBOARD_CONNECT_PROXY_URL": f"{cookies.url}/switchboard/connect",
            "SWITCHBOARD_REFRESH_PROXY_URL": f"{cookies.url}/switchboard/refresh",
        }
        with running(AppProcess("docs-proxies", workdir, env)) as (found,):
            yield found


def login(cookies: Backend, user: str) -> str:
    response = httpx.post(f"{cookies.url}/login", params={"user": user}, timeout=5)
    assert response.status_code == 200, response.text
    return f"session={response.cookies['session']}"


async def test_a_cookie_session_connects_without_a_token(app: AppProcess, cookies: Backend) -> None:
    async with ws_connect(app.ws("/ws"), additional_headers={"Cookie": login(cookies, "alice")}) as ws:
        proto = Proto(ws)
        reply = await proto.ok("connect")
        assert reply["user"] == "alice"
        assert reply["data"] == {"greeting": "welcome back, alice"}
        assert reply["expires"] > time.time() + 500  # expire_at: the refresh proxy renews it
        await proto.ok("subscribe", channel="orders:alice")  # granted, and the backend agrees
        assert await proto.error("subscribe", channel="orders:bob") == 403  # the backend's own code
        await proto.ok("subscribe", channel="chat:lobby")
        await proto.ok("publish", channel="chat:lobby", data={"text": "  hi  "})
        assert (await proto.push(is_pub("chat:lobby")))["data"] == {"text": "hi", "by": "alice"}
        assert await proto.error("publish", channel="chat:lobby", data={"text": "   "}) == 400
        counted = await proto.ok("rpc", method="orders.count")
        assert counted["data"] == {"user": "alice", "open": 3}
        now = await proto.ok("rpc", method="time")  # no prefix takes it: the hook answers
        assert abs(now["data"]["now"] - time.time()) < 60
        assert await proto.error("rpc", method="weather") == 103


async def test_without_the_cookie_the_backend_disconnects(app: AppProcess) -> None:
    async with ws_connect(app.ws("/ws")) as ws:
        proto = Proto(ws)
        found = await proto.call("connect")
        assert found == {"id": 1, "ok": False, "error": {"code": 103, "message": "not signed in"}}
        assert await expect_close(ws) == (4501, "not signed in")


def test_the_refresh_endpoint_renews_a_session_and_expires_others(cookies: Backend) -> None:
    login(cookies, "carol")
    renewed = httpx.post(f"{cookies.url}/switchboard/refresh", json={"user": "carol"}, timeout=5).json()
    assert renewed["result"]["expire_at"] > time.time() + 500
    gone = httpx.post(f"{cookies.url}/switchboard/refresh", json={"user": "mallory"}, timeout=5).json()
    assert gone == {"result": {"expired": True}}
