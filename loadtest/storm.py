"""Storm: many users on one instance, which dies; they come back through nginx and catch up.

    make loadtest SCENARIO=storm USERS=2000 SPAWN_RATE=500 DURATION=60s

Every user connects straight to one instance (STORM_TARGET, default app1, of the cluster in
CLUSTER_DIR). Once all are spawned and STORM_SETTLE seconds (default 10) have passed, the
instance is killed (STORM_MODE=kill, SIGKILL), drained (``drain``, SIGTERM), or every instance is
drained and restarted in turn (``rolling``; users then start behind nginx). Users reconnect
through the host (nginx) with jittered backoff and resume. ``catch-up`` is, per user, the time
from losing its connection to being whole again (its ``recovered`` frame); a user still
disconnected when the run ends counts as ``never caught up``. An ``echo`` probe on another
instance (PROBE_URL, default app2) shows what the survivors' own clients feel meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtest.resume import CLUSTER_DIR, EchoProbe, Publisher, ResumingUser, fire

__all__ = ["Probe", "Publisher", "StormUser"]

MODE = os.environ.get("STORM_MODE", "kill")
TARGET = os.environ.get("STORM_TARGET", "app1")
SETTLE = float(os.environ.get("STORM_SETTLE", "10"))
CLUSTER = [sys.executable, str(Path(__file__).resolve().parent.parent / "scripts" / "cluster.py")]
_spawned = Event()


def backend(name: str) -> str:
    state = json.loads((CLUSTER_DIR / "state.json").read_text())
    return f"http://127.0.0.1:{state['backends'][int(name.removeprefix('app')) - 1]}"


class StormUser(ResumingUser):
    def first_url(self) -> str:
        if MODE == "rolling":
            return self.next_url()  # behind nginx from the start: every instance will go
        url, self.host = self.host, backend(TARGET)
        try:
            return self.next_url()
        finally:
            self.host = url

    def caught_up(self, seconds: float) -> None:
        fire("catch-up", seconds * 1000)

    def on_stop(self) -> None:
        if self.dropped is not None:
            fire("never caught up", (time.perf_counter() - self.dropped) * 1000, "still disconnected at the end")
        super().on_stop()


class Probe(EchoProbe):
    abstract = False

    def on_start(self) -> None:
        # A survivor; in a rolling drain none is, so the probe goes through nginx like everyone.
        if MODE != "rolling":
            os.environ.setdefault("PROBE_URL", backend("app2" if TARGET != "app2" else "app1"))
        super().on_start()


def cluster(*args: str) -> None:
    started = time.monotonic()
    subprocess.run([*CLUSTER, *args], check=True, env={**os.environ, "CLUSTER_DIR": str(CLUSTER_DIR)})
    print(f"[storm] {' '.join(args)}: {time.monotonic() - started:.2f} s", flush=True)


def storm(environment: Environment) -> None:
    _spawned.wait()
    gevent.sleep(SETTLE)
    print(f"[storm] {MODE} at {time.time():.3f}", flush=True)
    if MODE == "rolling":
        state = json.loads((CLUSTER_DIR / "state.json").read_text())
        for name in sorted(n for n in state["pids"] if n.startswith("app")):
            cluster("kill", name, "--dir", str(CLUSTER_DIR), "--signal", "TERM")
            cluster("restart", name, "--dir", str(CLUSTER_DIR))
    else:
        cluster("kill", TARGET, "--dir", str(CLUSTER_DIR), "--signal", "KILL" if MODE == "kill" else "TERM")


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **_: Any) -> None:
    _spawned.set()


@events.test_start.add_listener
def _on_start(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(storm, environment)
