"""An HTTP backend the tests start as its own process: ``uvicorn module:app`` on a free port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import ROOT, AppProcess, free_port, running, wait_until


class Backend:
    """A uvicorn process serving ``app_spec``; stopped by its PID."""

    def __init__(self, app_spec: str, workdir: Path, cwd: Path = ROOT) -> None:
        self.port = free_port()
        self.app_spec = app_spec
        self.cwd = cwd
        self.log_path = workdir / f"backend-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Backend:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            cmd = [sys.executable, "-m", "uvicorn", self.app_spec, "--host", "127.0.0.1", "--port", str(self.port)]
            cmd += ["--log-level", "warning", "--no-access-log"]
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"backend exited:\n{self.log_path.read_text()[-2000:]}")
            return httpx.get(self.url + "/openapi.json", timeout=1).status_code < 500

        wait_until(up, 20, f"backend {self.app_spec}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextmanager
def backend(app_spec: str, workdir: Path, cwd: Path = ROOT) -> Iterator[Backend]:
    server = Backend(app_spec, workdir, cwd).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def proxied(workdir: Path, name: str, config: str, env: dict[str, str]) -> Iterator[tuple[Backend, AppProcess]]:
    """tests/integration/proxy_backend.py in its own process, and one app instance (memory broker)
    whose switchboard.toml is ``config`` and whose ``env`` is on top; ``{url}`` in either is the
    backend's URL. The app is stopped first, then the backend."""
    with backend("tests.integration.proxy_backend:app", workdir) as server:
        path = workdir / "switchboard.toml"
        path.write_text(config.format(url=server.url))
        full = {"SWITCHBOARD_CONFIG": str(path), **{key: value.format(url=server.url) for key, value in env.items()}}
        with running(AppProcess(name, workdir, full)) as (app,):
            yield server, app
