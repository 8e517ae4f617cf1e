"""The image's CMD with exactly the environment each deployment gives it, in a private namespace.

Run by test_launch_env.py inside ``unshare -m -n`` (tests/netns.py): the manifests' fixed ports
(8000, 9000) are this namespace's own, and the broker hosts they name (``redis``,
``redis.example.internal``) resolve, through a bind-mounted /etc/hosts, to a redis-server the test
starts, so the broker URLs are used as written.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from tests.deploy.launch_env import Launch, compose_service, pod
from tests.deploy.test_k8s import OVERLAYS, render
from tests.netns import IN_NAMESPACE
from tests.support import ROOT, wait_until

pytestmark = pytest.mark.skipif(not IN_NAMESPACE, reason="runs inside a private namespace via test_launch_env.py")

REDIS_ADDRESS = "127.0.0.4"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One redis-server at every broker host the deployments name, on the port they name."""
    tmp = tmp_path_factory.mktemp("broker")
    urls = [pod(render(overlay), tmp / overlay).env["SWITCHBOARD_BROKER_URL"] for overlay in OVERLAYS]
    urls.append(compose_service("app1", tmp / "compose").env["SWITCHBOARD_BROKER_URL"])
    hosts = {urlsplit(url).hostname for url in urls}
    ports = {urlsplit(url).port for url in urls}
    assert len(ports) == 1, ports
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    (tmp / "hosts").write_text(f"127.0.0.1 localhost\n{REDIS_ADDRESS} {' '.join(sorted(map(str, hosts)))}\n")
    subprocess.run(["mount", "--bind", str(tmp / "hosts"), "/etc/hosts"], check=True)
    args = ["redis-server", "--bind", REDIS_ADDRESS, "--port", str(ports.pop()), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: redis.Redis(host=REDIS_ADDRESS, port=6379).ping(), 10, "redis")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def serve_until_ready(launch: Launch, probes: list[tuple[str, int]], log: Path) -> str:
    """Start the command as the container would; returns its output after every probe passed."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            launch.command, cwd=ROOT, env=launch.process_env(VENV_BIN), stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def passes() -> bool:
            urls = [f"http://127.0.0.1:{port}{path}" for path, port in probes]
            return all(httpx.get(url, timeout=2).status_code == 200 for url in urls)

        wait_until(lambda: proc.poll() is not None or passes(), 40, f"{launch.command}: {probes} to answer 200")
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
    finally:
        proc.terminate()
        proc.wait(40)
    return log.read_text()


def probes(docs: list[dict[str, Any]]) -> list[tuple[str, int]]:
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    found = []
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        found.append((http["path"], ports.get(http["port"], http["port"])))
    return found


@pytest.mark.parametrize("links", [None, True], ids=["links-as-the-pod-spec-says", "links-forced-on"])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_becomes_ready(overlay: str, links: bool | None, broker: None, tmp_path: Path) -> None:
    docs = render(overlay)
    launch = pod(docs, tmp_path, links=links)
    if links:  # the very variables that used to break the bind address and Settings
        assert launch.env["SWITCHBOARD_PORT"].startswith("tcp://10.96.0.")
        assert "SWITCHBOARD_PORT_8000_TCP_ADDR" not in launch.env  # the Service's port is 80
        assert launch.env["SWITCHBOARD_PORT_80_TCP_ADDR"].startswith("10.96.0.")
    output = serve_until_ready(launch, probes(docs), tmp_path / "pod.log")
    assert "Listening at: http://0.0.0.0:8000" in output
    assert "Traceback" not in output
    # Dev runs at debug level: the ignored links are noted.
    if links and launch.env["SWITCHBOARD_LOG_LEVEL"] == "debug":
        assert "ignoring Kubernetes service links (not settings): " in output
    assert "ready on redis://" in output


def test_the_compose_app_service_becomes_ready(broker: None, tmp_path: Path) -> None:
    launch = compose_service("app1", tmp_path)
    healthcheck = [("/healthz", 8000), ("/readyz", 8000)]
    output = serve_until_ready(launch, healthcheck, tmp_path / "app1.log")
    assert "Listening at: http://0.0.0.0:8000" in output
    assert output.count("Booting worker with pid") == int(launch.env["WEB_CONCURRENCY"])
    assert "Traceback" not in output
    assert "instance app1 ready on redis://redis:6379/0" in output
