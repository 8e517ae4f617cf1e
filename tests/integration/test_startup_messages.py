"""What start-up says, under both launchers (``python -m app`` and gunicorn): one line for every
bad setting, the truth about readiness, and no secret in a log."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, TEST_SECRET, AppProcess, RedisServer, free_port, inherited_env, running, wait_until

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
LAUNCHERS = {
    "python -m app": [sys.executable, "-m", "app"],
    "gunicorn": [GUNICORN, "-c", "gunicorn.conf.py"],
}


def start_expecting_exit(launcher: str, env: dict[str, str], tmp_path: Path) -> list[str]:
    """Start with ``env`` as the only settings; returns stderr's lines once it has exited with 2."""
    full = {
        **inherited_env(),
        "SWITCHBOARD_HOST": "127.0.0.1",
        "SWITCHBOARD_PORT": str(free_port()),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **env,
    }
    result = subprocess.run(LAUNCHERS[launcher], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not result.stdout.strip(), result.stdout
    return lines


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"SWITCHBOARD_REDIS_URL": "redis://redis:6379/0"},
            "switchboard: invalid settings: SWITCHBOARD_REDIS_URL: unknown setting; "
            "did you mean SWITCHBOARD_BROKER_URL?",
        ),
        (
            {"SWITCHBOARD_BROKER_URL": "redis://h:notaport/0"},
            "switchboard: invalid settings: SWITCHBOARD_BROKER_URL: port 'notaport' is not a number from 0 to 65535",
        ),
        (
            {"SWITCHBOARD_DRAIN_SECONDS": "ten"},
            "switchboard: invalid settings: SWITCHBOARD_DRAIN_SECONDS: Input should be a valid number, "
            "unable to parse string as a number",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(launcher: str, env: dict[str, str], line: str, tmp_path: Path) -> None:
    assert start_expecting_exit(launcher, {"SWITCHBOARD_JWT_SECRET": TEST_SECRET, **env}, tmp_path) == [line]


def test_gunicorn_refuses_memory_with_two_workers_and_a_bad_timeout(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_JWT_SECRET": TEST_SECRET, "WEB_CONCURRENCY": "2"}
    [line] = start_expecting_exit("gunicorn", env, tmp_path)
    assert line.startswith("switchboard: SWITCHBOARD_BROKER_URL is memory://, which reaches the clients of one")
    # (A malformed WEB_CONCURRENCY fails inside gunicorn's own import, before any config file.)
    [line] = start_expecting_exit("gunicorn", {**env, "WEB_CONCURRENCY": "1", "GUNICORN_TIMEOUT": "soon"}, tmp_path)
    assert line == "switchboard: GUNICORN_TIMEOUT='soon' is not a whole number of at least 1"


def test_memory_outside_dev_mode_warns_and_service_links_get_a_debug_line(tmp_path: Path) -> None:
    env = {
        "SWITCHBOARD_LOG_LEVEL": "debug",
        "SWITCHBOARD_PORT_8000_TCP_ADDR": "10.96.0.12",
        "SWITCHBOARD_SERVICE_HOST": "10.96.0.12",
    }
    with running(AppProcess("memory", tmp_path, env)) as (app,):
        wait_until(lambda: "ready on memory://" in app.log_text(), 10, "the ready line")
        log = app.log_text()
    assert "SWITCHBOARD_BROKER_URL is memory://: publications reach this process's clients only" in log
    assert "ignoring Kubernetes service links (not settings): SWITCHBOARD_PORT_8000_TCP_ADDR, " in log


def test_the_log_says_waiting_for_redis_until_it_is_there(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis")  # its port is chosen, nothing listens there yet
    app = AppProcess("early", tmp_path, {"SWITCHBOARD_BROKER_URL": redis_server.url})
    with running(app):
        assert httpx.get(app.http + "/readyz").status_code == 503
        wait_until(lambda: "started; waiting for Redis" in app.log_text(), 10, "the waiting line")
        assert "ready on" not in app.log_text()
        redis_server.start()
        try:
            wait_until(lambda: httpx.get(app.http + "/readyz").status_code == 200, 30, "readiness")
            ready_line = f"instance early ready on {redis_server.url}"
            wait_until(lambda: ready_line in app.log_text(), 10, "the ready line")
        finally:
            redis_server.stop()
    log = app.log_text()
    assert log.index("started; waiting for Redis") < log.index("ready on")


def test_the_dev_api_key_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    """stderr a terminal: the key is printed there, and no file is made (the file case is
    tests/integration/test_startup_and_http.py's)."""
    port = free_port()
    env = {**inherited_env(), "SWITCHBOARD_DEV_MODE": "true", "PYTHONUNBUFFERED": "1"}
    controller, terminal = pty.openpty()
    log_path = tmp_path / "stdout.log"
    with log_path.open("wb") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=env, stdout=stdout, stderr=terminal
        )
    os.close(terminal)
    shown = b""
    try:
        deadline = time.monotonic() + 20
        while b"server API key for this process: " not in shown or not shown.endswith(b"\n"):
            assert time.monotonic() < deadline, shown.decode(errors="replace")
            if select.select([controller], [], [], 0.5)[0]:
                shown += os.read(controller, 4096)
        line = next(x for x in shown.decode().splitlines() if "server API key for this process: " in x)
        key = line.rsplit(" ", 1)[1]
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 20, "the instance")
        assert httpx.post(f"http://127.0.0.1:{port}/api/v1/info", headers={"X-API-Key": key}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)
        os.close(controller)
    assert key not in log_path.read_text()
    assert " is in " not in shown.decode(errors="replace")
