"""Real processes for tests: a private redis-server and app instances on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
TEST_API_KEY = "test-api-key-0123456789-abcdefghijklmnopqrstuvwxyz"
API_HEADERS = {"X-API-Key": TEST_API_KEY}
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def inherited_env() -> dict[str, str]:
    """This process's environment without SWITCHBOARD_* names: an instance a test starts gets only
    the settings the test names (the app refuses names it does not know)."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("SWITCHBOARD_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def eventually(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """``wait_until`` in a coroutine: for state that many clients or another task move, with no
    one event to wait on."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - see the docstring
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


class RedisServer:
    def __init__(self, workdir: Path, *, appendonly: bool = False, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.dir = workdir
        self.appendonly = appendonly
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir)]
            args += ["--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no", "--loglevel", "warning"]
            args += self.extra
            proc = self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            up = functools.partial(self._up, proc)
            wait_until(up, 10, f"redis-server on {self.port}")
            if proc.poll() is None:
                self._started = True
                return self
            if self._started:
                break  # a restart keeps its port: clients of the first start use it
            # Its ports were free when chosen and unbound until now: another test worker (or an
            # outgoing connection) took one meanwhile. Choose again.
            self.port = free_port()
            if "--cluster-port" in self.extra:
                self.extra[self.extra.index("--cluster-port") + 1] = str(free_port())
        raise AssertionError(f"redis-server exited at start on port {self.port}")

    def _up(self, proc: subprocess.Popen[bytes]) -> bool:
        """Answering as this process (another worker's server may hold the port), or gone."""
        if proc.poll() is not None:
            return True
        quick = redis.Redis(port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
        try:
            return int(quick.info("server")["process_id"]) == proc.pid
        finally:
            quick.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class AppProcess:
    """``python -m app`` on a free port; its output goes to a log file tests may read."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.env = {
            **inherited_env(),
            "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
            "SWITCHBOARD_API_KEYS": TEST_API_KEY,
            "SWITCHBOARD_INSTANCE_ID": name,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_ready(self, path: str = "/healthz", timeout: float = 20) -> None:
        """Until ``path`` answers 200; an instance that exits meanwhile fails at once, with its log
        (``wait_until`` would take that failure for "not yet")."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http + path, timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                late = f"timed out after {timeout}s waiting for {self.name} {path}"
                raise AssertionError(f"{late}:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def start(self) -> AppProcess:
        self.launch()
        self.wait_ready()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running(*apps: AppProcess) -> Iterator[tuple[AppProcess, ...]]:
    """Start instances in parallel (start-up is mostly imports) and always stop them."""
    try:
        for app in apps:
            app.launch()
        for app in apps:
            app.wait_ready()
        yield apps
    finally:
        for app in apps:
            app.stop()


# -- WebSocket client helpers -------------------------------------------------------------------


def ws_connect(url: str, **kwargs: Any) -> Any:
    return connect(url, open_timeout=5, close_timeout=2, **kwargs)


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> Any:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return orjson.loads(raw)


async def recv_until(ws: ClientConnection, predicate: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Skip frames until one matches; fails at the deadline."""
    async with asyncio.timeout(timeout):
        while True:
            frame = orjson.loads(await ws.recv())
            if predicate(frame):
                return frame


def positioned(frame: Any) -> Any:
    """A channel frame without its ``offset``/``epoch``, after checking that it carries them."""
    assert isinstance(frame, dict), frame
    rest = dict(frame)
    offset, epoch = rest.pop("offset", None), rest.pop("epoch", None)
    assert isinstance(offset, int), frame
    assert offset > 0, frame
    assert isinstance(epoch, str), frame
    assert epoch, frame
    return rest


def content_is(value: Any) -> Callable[[Any], bool]:
    """A recv_until predicate: the frame's ``content`` equals ``value``."""
    return lambda frame: bool(isinstance(frame, dict) and frame.get("content") == value)


async def expect_close(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read (discarding frames) until the server closes; returns the close code and reason."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


async def send_json(ws: ClientConnection, payload: Any) -> None:
    await ws.send(orjson.dumps(payload).decode())
