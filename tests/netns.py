"""The production stack (redis, gunicorn instances, the unchanged nginx.conf) in a private namespace.

Modules that use it run under ``unshare -m -n`` (see ``run_in_namespace``): the namespace has its
own loopback and its own /etc/hosts (bind-mounted), so the compose hostnames app1..app3 and redis
resolve to 127.0.0.x addresses that only this namespace can see, and nginx can listen on :8080.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from websockets.asyncio.client import ClientConnection, connect

from tests.support import API_HEADERS, ROOT, TEST_API_KEY, TEST_SECRET, inherited_env, wait_until

HOSTS = {"app1": "127.0.0.2", "app2": "127.0.0.3", "app3": "127.0.0.5", "redis": "127.0.0.4"}
NGINX = "/usr/sbin/nginx"
PROXY = "ws://127.0.0.1:8080"
PROXY_HTTP = "http://127.0.0.1:8080"
IN_NAMESPACE = os.environ.get("TESTS_IN_NETNS") == "1"


def run_in_namespace(module: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a pytest module inside a fresh mount+network namespace; returns its output."""
    pytest_args = ["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-rA", str(module)]
    return subprocess.run(
        ["unshare", "-m", "-n", "--", sys.executable, *pytest_args],
        cwd=ROOT,
        env={**os.environ, "TESTS_IN_NETNS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def passed(output: str) -> int:
    found = re.search(r"(\d+) passed", output)
    return int(found.group(1)) if found else 0


@dataclass
class Stack:
    tmp: Path
    app_env: dict[str, str] = field(default_factory=dict)
    apps: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    nginx: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None

    @property
    def access_log(self) -> str:
        return (self.tmp / "nginx.access.log").read_text()

    @property
    def error_log(self) -> str:
        return (self.tmp / "nginx.error.log").read_text()

    def start(self, names: tuple[str, ...] = ("app1", "app2", "app3")) -> Stack:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        hosts = self.tmp / "hosts"
        hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in HOSTS.items()))
        subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)
        args = ["redis-server", "--bind", HOSTS["redis"], "--port", "6379", "--save", "", "--appendonly", "no"]
        self.redis = subprocess.Popen([*args, "--dir", str(self.tmp)], stdout=subprocess.DEVNULL)
        wait_until(lambda: redis.Redis(host="redis").ping(), 10, "redis")
        for name in names:
            self.launch(name)
        for name in names:
            self.wait_ready(name)
        self.nginx = start_nginx(ROOT / "nginx.conf", self.tmp, "nginx")
        wait_until(lambda: httpx.get(PROXY_HTTP + "/healthz").status_code == 200, 10, "nginx")
        return self

    def launch(self, name: str) -> None:
        """One instance as production runs it: gunicorn with uvicorn workers, in its own session."""
        env = {
            **inherited_env(),
            "SWITCHBOARD_HOST": HOSTS[name],
            "SWITCHBOARD_PORT": "8000",
            "SWITCHBOARD_INSTANCE_ID": name,
            "SWITCHBOARD_BROKER_URL": "redis://redis:6379/0",
            "SWITCHBOARD_JWT_SECRET": TEST_SECRET,
            "SWITCHBOARD_API_KEYS": TEST_API_KEY,
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(self.tmp / f"metrics-{name}"),
            **self.app_env,
        }
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.apps[name] = subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,  # so that a crash can take the whole process group down
            )

    def wait_ready(self, name: str, timeout: float = 30) -> None:
        wait_until(functools.partial(ready, f"http://{name}:8000/readyz"), timeout, f"{name} ready")

    def kill(self, name: str) -> None:
        """A crash: SIGKILL to the master and its workers at once, as when a container dies."""
        proc = self.apps[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in [self.nginx, *self.apps.values(), self.redis]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def start_nginx(conf: Path, tmp: Path, name: str) -> subprocess.Popen[bytes]:
    pid = tmp / f"{name}.pid"
    check = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-g", f"pid {pid}; error_log stderr warn;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    with (tmp / f"{name}.access.log").open("wb") as out, (tmp / f"{name}.error.log").open("wb") as err:
        return subprocess.Popen([NGINX, "-c", str(conf), "-g", f"pid {pid}; daemon off;"], stdout=out, stderr=err)


def ready(url: str) -> bool:
    return httpx.get(url).status_code == 200


def ws(path: str, source: str, **kwargs: object) -> connect:
    return connect(PROXY + path, local_addr=(source, 0), open_timeout=5, **kwargs)  # type: ignore[arg-type]


def instance(sock: ClientConnection) -> str:
    assert sock.response is not None
    return sock.response.headers["x-switchboard-instance"]


async def wait_presence(channel: str, expected: int, timeout: float = 10) -> None:
    """Poll the cluster-wide member count through nginx without blocking the clients' event loop."""
    async with httpx.AsyncClient(base_url=PROXY_HTTP, headers=API_HEADERS) as http, asyncio.timeout(timeout):
        while (await http.get(f"/api/presence/{channel}")).json()["members"] != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # a remote count: there is no event to wait on
