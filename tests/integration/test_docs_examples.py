"""Every console example and code sample of the README and docs/, run as the page shows it.

Each page's examples run in page order in one terminal (``tests/docs_console.py``): the page's own
``make run`` line says which configuration they claim, and what they print is compared with the
page.
"""

from __future__ import annotations

import asyncio
import json
import types
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docs_console import Console, localize, python_env
from tests.docs_examples import example
from tests.support import ROOT, AppProcess, expect_close, recv_json, recv_until, running, ws_connect


def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    with Console(tmp_path) as console:
        for name in ("start", "ws-session", "api-publish", "tutorial"):
            console.run(example("README.md", name))


def test_protocol_session_runs_as_written(tmp_path: Path) -> None:
    with Console(tmp_path) as console:
        for name in ("start", "session"):
            console.run(example("docs/protocol.md", name))


def test_server_api_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = "docs/server-api.md"
    with Console(tmp_path) as console:
        for name in ("credentials", "publish"):
            console.run(example(page, name))
        console.check_python(example(page, "python-client"), example(page, "python-client-output"))
        env = python_env(console)
        monkeypatch.setenv("KEY", env["KEY"])
        monkeypatch.chdir(tmp_path)
        asyncio.run(ship_an_order(example(page, "fastapi-after-commit"), console.port))


async def ship_an_order(code: str, port: int) -> None:
    """The FastAPI example's app, its database, and customer 42 watching their order channel."""
    shop = types.ModuleType("shop")
    exec(compile(localize(code, port), "docs/server-api.md#fastapi-after-commit", "exec"), shop.__dict__)
    with shop.db:
        shop.db.execute("INSERT INTO orders VALUES (1, '42', 'paid')")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as switchboard:
        token = (await switchboard.post("/dev/token", json={"sub": "42", "name": "Customer"})).json()["token"]
    async with ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(json.dumps({"id": 1, "op": "connect", "token": token}))
        assert (await recv_json(ws))["ok"] is True
        await ws.send(json.dumps({"id": 2, "op": "subscribe", "channel": "orders:#42"}))
        assert (await recv_json(ws))["ok"] is True
        transport = httpx.ASGITransport(app=shop.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            for _ in range(2):  # a retried request publishes once
                response = await client.post("/orders/1/ship")
                assert response.status_code == 200, response.text
                assert response.json() == {"status": "shipped"}
            assert (await client.post("/orders/2/ship")).status_code == 404
        push = await recv_json(ws)
        assert (push["op"], push["channel"], push["data"]) == ("pub", "orders:#42", {"order": 1, "status": "shipped"})
        with pytest.raises(TimeoutError):
            await recv_json(ws, timeout=0.5)
    assert shop.db.execute("SELECT status FROM orders WHERE id = 1").fetchone() == ("shipped",)
    await shop.switchboard.aclose()


def test_python_clients_run_as_written(tmp_path: Path) -> None:
    page = "docs/client.md"
    with Console(tmp_path) as console:
        console.run(example(page, "start"))
        for name in ("client-py", "switchboardclient-py"):
            console.check_python(example(page, name), example(page, f"{name}-output"))


def test_the_hook_example_allows_denies_and_rewrites(tmp_path: Path) -> None:
    (tmp_path / "doc_hooks.py").write_text(example("docs/protocol.md", "hooks"))
    env = {
        "SWITCHBOARD_DEV_MODE": "true",
        "SWITCHBOARD_CONFIG": str(ROOT / "deploy" / "switchboard.toml"),
        "SWITCHBOARD_HOOKS": "doc_hooks:hooks",
        "PYTHONPATH": str(tmp_path),
    }
    with running(AppProcess("hooks", tmp_path, env)) as (app,):
        asyncio.run(hook_verdicts(app))


async def hook_verdicts(app: AppProcess) -> None:
    async def signed_in(user: str) -> Any:
        token = httpx.post(app.http + "/dev/token", json={"sub": user}).json()["token"]
        ws = await ws_connect(app.ws("/ws"))
        await ws.send(json.dumps({"id": 1, "op": "connect", "token": token}))
        return ws, await recv_json(ws)

    mallory, reply = await signed_in("mallory")
    assert reply["error"] == {"code": 103, "message": "suspended"}
    assert (await expect_close(mallory))[0] == 1008
    alice, reply = await signed_in("alice")
    assert reply["ok"] is True
    commands = [
        ({"op": "subscribe", "channel": "team:alice"}, True),
        ({"op": "subscribe", "channel": "team:bob"}, False),
        ({"op": "subscribe", "channel": "chat:lobby"}, True),
    ]
    for n, (command, ok) in enumerate(commands, 2):
        await alice.send(json.dumps({"id": n, **command}))
        reply = await recv_until(alice, lambda frame: frame.get("id") == n)  # noqa: B023
        assert reply["ok"] is ok, (command, reply)
    await alice.send(json.dumps({"id": 9, "op": "publish", "channel": "chat:lobby", "data": {"text": "darn it"}}))
    push = await recv_until(alice, lambda frame: frame.get("op") == "pub")
    assert push["data"] == {"text": "d**n it"}
    await alice.close()
