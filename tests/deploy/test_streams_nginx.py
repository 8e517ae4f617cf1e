"""SSE behind the repository's nginx.conf: an instance SIGKILLed mid-stream, and every client
resumes with ``Last-Event-ID`` on the other instance with nothing lost, nothing twice, in order.

The unchanged nginx.conf, its upstream pointed at two real instances on free ports (and its
listen port moved), in front of a real redis; the publisher writes to the surviving instance.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import start_cluster
from tests.netns import NGINX, start_nginx
from tests.sse import Reader
from tests.support import API_HEADERS, ROOT, AppProcess, free_port, running, wait_until

READERS = 8
MESSAGES = 300
RATE = 100.0  # per second: 3 s of stream
CHANNEL = "chaos:sse"


def render(conf: str, upstreams: list[int], port: int) -> str:
    """nginx.conf as shipped, but for this machine's ports."""
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in upstreams)
    conf, count = re.subn(r"(?:        server app\d:8000 max_fails=0;\n)+", servers, conf)
    assert count == 1, "nginx.conf's upstream block changed: update this test"
    conf, count = re.subn(r"listen 8080;", f"listen 127.0.0.1:{port};", conf)
    assert count == 1
    return conf.replace("worker_processes auto;", "worker_processes 1;")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, AppProcess, AppProcess]]:
    assert shutil.which(NGINX) or Path(NGINX).exists(), "nginx is required (make deps)"
    redis_server, a, b = start_cluster(tmp_path)
    try:
        with running(a, b):
            port = free_port()
            conf = tmp_path / "nginx.conf"
            conf.write_text(render((ROOT / "nginx.conf").read_text(), [a.port, b.port], port))
            nginx = start_nginx(conf, tmp_path, "nginx")
            try:
                proxy = f"http://127.0.0.1:{port}"
                wait_until(lambda: httpx.get(proxy + "/healthz").status_code == 200, 10, "nginx")
                yield proxy, a, b
            finally:
                nginx.terminate()
                try:
                    nginx.wait(10)
                except subprocess.TimeoutExpired:
                    nginx.kill()
    finally:
        redis_server.stop()


async def test_sse_clients_resume_on_the_other_instance_after_a_sigkill(
    stack: tuple[str, AppProcess, AppProcess],
) -> None:
    proxy, a, b = stack
    readers = [Reader(f"{proxy}/sse?channel={CHANNEL}").start() for _ in range(READERS)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.connected.wait() for r in readers)), 20)
        serving = {r.instances[0] for r in readers}
        assert len(serving) == 1, serving  # nginx hashes the client address: one instance
        victim, survivor = (a, b) if serving == {a.name} else (b, a)
        async with httpx.AsyncClient(base_url=survivor.http, headers=API_HEADERS, timeout=10) as http:
            for n in range(MESSAGES):
                if n == MESSAGES // 3:
                    victim.kill()  # SIGKILL: no drain, no close event; the streams just break
                body = {"channel": CHANNEL, "data": {"n": n}}
                assert (await http.post("/api/v1/publish", json=body)).status_code == 200
                await asyncio.sleep(1 / RATE)
        async with asyncio.timeout(30):
            while any(MESSAGES - 1 not in r.numbers for r in readers):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # what the reader tasks collect, up to the last one
    finally:
        for reader in readers:
            await reader.stop()
    for reader in readers:
        assert reader.numbers == list(range(MESSAGES)), (len(reader.numbers), reader.instances)
        assert reader.instances == [victim.name, survivor.name]
        notices = [e for e in reader.seen if e["op"] == "subscribed"]
        assert notices[-1]["recovered"] is True, notices
