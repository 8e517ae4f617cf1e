"""Start-up policy and the HTTP side, on the default in-memory broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.integration.conftest import token
from tests.support import API_HEADERS, ROOT, AppProcess, positioned, recv_json, running, wait_until, ws_connect


def run_app_expecting_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run(
        [sys.executable, "-m", "app", "--port", "1"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("secret", ["", "too-short", "changeme"])
def test_refuses_to_start_without_a_strong_secret(secret: str) -> None:
    result = run_app_expecting_exit({"SWITCHBOARD_JWT_SECRET": secret} if secret else {})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("switchboard: invalid settings: SWITCHBOARD_JWT_SECRET")
    if secret:
        assert secret not in lines[0]


@pytest.fixture(scope="module")
def dev_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    env = {"SWITCHBOARD_DEV_MODE": "true", "SWITCHBOARD_JWT_SECRET": "", "SWITCHBOARD_API_KEYS": ""}
    app = AppProcess("dev", tmp_path_factory.mktemp("dev"), env)
    with running(app):
        yield app


@pytest.fixture(scope="module")
def prod_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    with running(AppProcess("prod", tmp_path_factory.mktemp("prod"))) as (app,):
        yield app


def test_dev_mode_warns_and_mints_tokens_that_work(dev_app: AppProcess) -> None:
    assert "dev mode: no SWITCHBOARD_JWT_SECRET set" in dev_app.log_text()
    response = httpx.post(dev_app.http + "/dev/token", json={"sub": "d1", "name": "Dee"})
    assert response.status_code == 200
    assert response.json()["token"].count(".") == 2


async def test_dev_token_authenticates_on_the_same_instance(dev_app: AppProcess) -> None:
    tok = httpx.post(dev_app.http + "/dev/token", json={"sub": "d1", "name": "Dee"}).json()["token"]
    async with ws_connect(dev_app.ws(f"/ws/secure?token={tok}")) as ws:
        assert (await recv_json(ws))["user"] == "Dee"


def test_dev_token_is_absent_in_production(prod_app: AppProcess) -> None:
    assert httpx.post(prod_app.http + "/dev/token", json={}).status_code == 404


def test_dev_mode_api_key_is_in_a_private_file_not_in_the_log(dev_app: AppProcess) -> None:
    """stderr is a file here (as with `make run > log 2>&1`): the log names the key's file only."""
    lines = [line for line in dev_app.log_text().splitlines() if "server API key for this process" in line]
    assert len(lines) == 1
    path = Path(lines[0].split(" is in ", 1)[1].split(" ", 1)[0])
    assert path.stat().st_mode & 0o777 == 0o600
    key = path.read_text()
    assert len(key) >= 32
    assert key not in dev_app.log_text()
    assert httpx.post(dev_app.http + "/api/v1/info", headers={"X-API-Key": key}).status_code == 200
    assert httpx.post(dev_app.http + "/api/v1/info", headers={"X-API-Key": key + "x"}).status_code == 401


def test_docs_are_off_outside_dev_mode(prod_app: AppProcess) -> None:
    assert httpx.get(prod_app.http + "/docs").status_code == 404
    assert httpx.get(prod_app.http + "/openapi.json").status_code == 404


def test_the_schema_lists_the_server_api_with_examples_and_no_dev_token(tmp_path: Path) -> None:
    with running(AppProcess("docs", tmp_path, {"SWITCHBOARD_DOCS": "true"})) as (app,):
        assert httpx.get(app.http + "/docs").status_code == 200
        schema = httpx.get(app.http + "/openapi.json").json()
    paths = schema["paths"]
    for method in ("publish", "broadcast", "send", "disconnect", "subscribe", "unsubscribe"):
        assert f"/api/v1/{method}" in paths
    for method in ("presence", "presence_stats", "history", "channels", "info"):
        assert f"/api/v1/{method}" in paths
    publish = paths["/api/v1/publish"]["post"]
    body = publish["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["channel"]["examples"] == ["news:eu"]
    assert publish["security"]  # the API key, in either header
    assert "/dev/token" not in paths
    assert not any("{method}" in path for path in paths)


def test_demo_page_health_and_readiness(prod_app: AppProcess) -> None:
    page = httpx.get(prod_app.http + "/")
    assert page.status_code == 200
    assert "/static/switchboard.js" in page.text
    assert httpx.get(prod_app.http + "/healthz").json() == {"status": "ok"}
    assert httpx.get(prod_app.http + "/readyz").json() == {"status": "ready", "broker": True, "draining": False}


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "user-jwt"])
def test_http_publish_needs_the_api_key(prod_app: AppProcess, header: str | None) -> None:
    if header == "user-jwt":  # a user's token is never a server credential
        header = f"Bearer {token('svc')}"
    headers = {"Authorization": header} if header else {}
    response = httpx.post(prod_app.http + "/api/global/news", json={"content": 1}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 101


def test_http_publish_validates_its_body(prod_app: AppProcess) -> None:
    response = httpx.post(prod_app.http + "/api/global/news", json={"wrong": 1}, headers=API_HEADERS)
    assert response.status_code == 400
    assert response.json() == {"error": {"code": 107, "message": "Field 'content' is required"}}


def test_http_publish_is_capped_like_a_client_frame(prod_app: AppProcess) -> None:
    response = httpx.post(
        prod_app.http + "/api/global/news",
        json={"content": "x" * 66_000},  # over the default 64 KiB, within the body allowance
        headers=API_HEADERS,
    )
    assert response.status_code == 413
    assert response.json() == {"error": {"code": 106, "message": "publication over 65536 bytes"}}


async def test_http_publish_reaches_subscribers(prod_app: AppProcess) -> None:
    async with ws_connect(prod_app.ws("/ws/global/news")) as ws:
        response = httpx.post(
            prod_app.http + "/api/global/news", json={"content": {"headline": "hi"}}, headers=API_HEADERS
        )
        assert response.status_code == 202
        assert positioned(await recv_json(ws)) == {"content": {"headline": "hi"}, "channel": "news"}


@pytest.mark.parametrize("path", ["/ws/chat", "/ws"])
def test_plain_http_on_a_websocket_path_gets_426(prod_app: AppProcess, path: str) -> None:
    response = httpx.get(prod_app.http + path)
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert response.json() == {"error": "WebSocket upgrade required"}


async def welcome_again(app: AppProcess, seconds: float) -> None:
    """Retry /ws/echo until a handshake is accepted and echoes, within ``seconds``: the server's
    clean-up and its handshake bucket refill have no event a client can wait on."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                async with ws_connect(app.ws("/ws/echo")) as ws:
                    await ws.send("back")
                    assert await ws.recv() == "Echo: back"
                    return
            except InvalidStatus:
                await asyncio.sleep(0.05)


async def test_an_instance_at_max_connections_answers_503_and_counts_it(tmp_path: Path) -> None:
    with running(AppProcess("full", tmp_path, {"SWITCHBOARD_MAX_CONNECTIONS": "2"})) as (app,):
        assert "open-files limit: soft" in app.log_text()
        async with ws_connect(app.ws("/ws/echo")), ws_connect(app.ws("/ws/echo")):
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(app.ws("/ws/echo")):
                    pass
            assert refused.value.response.status_code == 503
            assert b"SWITCHBOARD_MAX_CONNECTIONS" in refused.value.response.body
            metrics = httpx.get(app.http + "/metrics").text
            assert 'switchboard_connects_total{result="refused_full"} 1.0' in metrics
        # Below the cap again (once the server has let the two go): a new socket is welcome.
        await welcome_again(app, 5)


async def test_a_client_chosen_close_code_does_not_mint_a_metric_series(prod_app: AppProcess) -> None:
    for code in (3456, 3457, 4321):
        async with ws_connect(prod_app.ws("/ws/echo")) as ws:
            await ws.close(code=code, reason="client's own")

    def counted() -> bool:
        text = httpx.get(prod_app.http + "/metrics").text
        return 'switchboard_disconnects_total{code="3xxx"} 2.0' in text and 'code="4xxx"} 1.0' in text

    wait_until(counted, 5, "bucketed close codes")
    assert 'code="3456"' not in httpx.get(prod_app.http + "/metrics").text


async def test_tokens_are_redacted_at_trace_level_in_every_spelling(tmp_path: Path) -> None:
    jwt = token("trace-user")
    with running(AppProcess("trace", tmp_path, {"SWITCHBOARD_LOG_LEVEL": "trace"})) as (app,):
        for query in (f"token={jwt}", f"%74oken={jwt}", f"TOKEN={jwt}", f"x={jwt}"):
            async with ws_connect(app.ws(f"/ws/secure?{query}")) as ws:
                with contextlib.suppress(Exception):
                    await recv_json(ws, timeout=2)
        log = app.log_text()
    assert "ASGI [" in log  # trace level really was on: scopes were logged
    assert jwt.split(".")[2] not in log
    assert jwt.split(".")[1] not in log


def test_an_unknown_log_level_is_refused_with_one_line() -> None:
    result = run_app_expecting_exit({"SWITCHBOARD_DEV_MODE": "true", "SWITCHBOARD_LOG_LEVEL": "verbose"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert "SWITCHBOARD_LOG_LEVEL: Input should be" in result.stderr


async def test_handshakes_beyond_the_rate_get_503_with_retry_after(tmp_path: Path) -> None:
    with running(AppProcess("storm", tmp_path, {"SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND": "5"})) as (app,):
        admitted, refused = 0, []
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(20):  # a storm: one after another, as fast as the server answers
                try:
                    await stack.enter_async_context(ws_connect(app.ws("/ws/echo")))
                    admitted += 1
                except InvalidStatus as exc:
                    refused.append(exc.response)
            elapsed = time.monotonic() - started
        assert admitted <= 5 + 5 * elapsed + 1  # one second's burst, then 5 a second
        assert len(refused) == 20 - admitted
        assert {r.status_code for r in refused} == {503}
        assert {r.headers["Retry-After"] for r in refused} == {"1"}
        assert b"SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND" in refused[0].body
        metrics = httpx.get(app.http + "/metrics").text
        assert f'switchboard_connects_total{{result="refused_rate"}} {float(len(refused))}' in metrics
        # The bucket refills at 5 a second: a retry, as the 503 asked, is soon welcome.
        await welcome_again(app, 3)
