"""`make cluster`: three instances behind nginx on loopback, and a `down` that stops them all.

It runs as `make cluster OUTBOX=1` (one start-up pays for both): a private PostgreSQL with the
outbox table too, relayed by the instances."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

from tests.support import ROOT, free_port, recv_json, send_json, wait_until, ws_connect

SCRIPT = ROOT / "scripts" / "cluster.py"
CLUSTER = ["--instances", "3", "--outbox"]


def cluster(command: str, state: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), command, "--dir", str(state), "--port", str(port), *CLUSTER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def exists(path: str) -> bool:
    return Path(path).exists()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cluster_up_serves_through_nginx_and_down_stops_everything(tmp_path: Path) -> None:
    state, port = tmp_path / "cluster", free_port()
    started = cluster("up", state, port)
    pids: dict[str, int] = {}
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"cluster up: http://127.0.0.1:{port}/" in started.stdout
        recorded = json.loads((state / "state.json").read_text())
        pids = recorded["pids"]
        assert sorted(pids) == ["app1", "app2", "app3", "nginx", "postgres", "redis"]
        with psycopg.connect(recorded["outbox_url"]) as conn:
            conn.execute("INSERT INTO switchboard_outbox (channel, data) VALUES ('news:eu', '{\"n\": 1}')")
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        # Find two client addresses that nginx sends to different instances, and chat across them.
        by_instance: dict[str, str] = {}
        for last in range(10, 60):
            source = f"127.0.0.{last}"
            async with ws_connect(f"ws://127.0.0.1:{port}/ws/echo", local_addr=(source, 0)) as ws:
                by_instance.setdefault(ws.response.headers["x-switchboard-instance"], source)
            if len(by_instance) == 3:
                break
        assert sorted(by_instance) == ["app1", "app2", "app3"]
        a, b = by_instance["app1"], by_instance["app3"]
        headers = {"X-API-Key": (state / "api-key").read_text()}

        def members() -> int:
            response = httpx.get(f"http://127.0.0.1:{port}/api/presence/room:demo", headers=headers)
            return int(response.json()["members"])

        async with ws_connect(f"ws://127.0.0.1:{port}/ws/room/demo", local_addr=(a, 0)) as wa:
            wait_until(lambda: members() == 1, 5, "the first member's join")  # joiners get no frame
            async with ws_connect(f"ws://127.0.0.1:{port}/ws/room/demo", local_addr=(b, 0)) as wb:
                assert (await recv_json(wa))["members"] == 2
                await send_json(wb, {"content": "across the cluster"})
                assert (await recv_json(wa))["content"] == "across the cluster"

        def relayed() -> list[object]:
            reply = httpx.post(f"http://127.0.0.1:{port}/api/v1/history", json={"channel": "news:eu"}, headers=headers)
            return [pub["data"] for pub in reply.json()["publications"]]

        wait_until(lambda: relayed() == [{"n": 1}], 15, "the outbox row relayed")
    finally:
        stopped = cluster("down", state, port)
    assert stopped.returncode == 0, stopped.stderr
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert not (state / "state.json").exists()
    assert not exists(recorded["postgres_dir"])  # PostgreSQL's files went with it
