"""Reduced churn and storm runs (loadtest/churn.py, loadtest/storm.py) against a real local
cluster: redis-server, three gunicorn instances and nginx (scripts/cluster.py), driven by Locust
as a subprocess. Each asserts zero loss and its catch-up bound, and prints what it counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.stats import percentile
from tests.support import ROOT, free_port

LOCUST = str(Path(sys.executable).parent / "locust")
PROBLEMS = ("lost", "duplicate", "history lost", "never caught up", "publish")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    where, port = tmp_path / "cluster", free_port()
    command = [sys.executable, str(ROOT / "scripts" / "cluster.py")]
    subprocess.run([*command, "up", "--dir", str(where), "--port", str(port)], check=True, timeout=90)
    try:
        yield where, port
    finally:
        subprocess.run([*command, "down", "--dir", str(where)], check=False, timeout=120)


def locust(scenario: str, cluster: tuple[Path, int], users: int, seconds: int, **env: str) -> dict[str, Any]:
    where, port = cluster
    summary = where / f"{scenario}-summary"
    run = ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", f"http://127.0.0.1:{port}"]
    output = ["--only-summary", "--json-file", str(summary)]
    result = subprocess.run(
        [LOCUST, "-f", str(ROOT / "loadtest" / f"{scenario}.py"), "--headless", *run, *output],
        cwd=where,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CLUSTER_DIR": str(where), **env},
        capture_output=True,
        text=True,
        timeout=seconds + 90,
    )
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith("[storm]")))
    stats = {row["name"]: row for row in json.loads(summary.with_suffix(".json").read_text())}
    assert stats, result.stderr[-3000:]
    return stats


def summary(title: str, stats: dict[str, Any], *names: str) -> None:
    counts = {name: stats[name]["num_requests"] for name in names if name in stats}
    failures = {name: row["num_failures"] for name, row in stats.items() if row["num_failures"]}
    timing = {f"{n} p99 ms": round(percentile(stats[n], 0.99)) for n in ("replay", "catch-up", "echo") if n in stats}
    print(f"\n[churn] {title}: {counts} {timing} failures={failures}")


def no_problems(stats: dict[str, Any]) -> None:
    failures = {name: row["num_failures"] for name, row in stats.items() if row["num_failures"]}
    assert not failures, failures
    assert not {name for name in PROBLEMS if name in stats and name != "publish"}, stats.keys()


def slow_consumers(port: int) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("switchboard_slow_consumer_disconnects_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("protocol", "users", "seconds"), [("global", 300, 30), ("ws", 150, 25)])
def test_churn_loses_nothing_and_replays_within_a_second(
    cluster: tuple[Path, int], protocol: str, users: int, seconds: int
) -> None:
    """On the tutorial endpoint (since/epoch in the URL) and on /ws (in the subscribe command)."""
    stats = locust("churn", cluster, users, seconds, LOAD_RATE="20", LOAD_CHANNELS="10", LOAD_PROTOCOL=protocol)
    title = f"{users} users on {protocol}, flapping 2 s every ~15 s for {seconds} s"
    summary(title, stats, "deliver", "replay", "publish", "refused")
    no_problems(stats)
    assert stats["deliver"]["num_requests"] > users * seconds * 2 * 0.5  # 2 msg/s per user, minus ramp-up
    assert stats["replay"]["num_requests"] >= users * 2 // 3  # most users flapped at least once
    assert percentile(stats["replay"], 0.99) <= 1000


@pytest.mark.timeout(240)
def test_a_storm_after_an_instance_dies_catches_everyone_up_within_ten_seconds(cluster: tuple[Path, int]) -> None:
    users = 1000
    stats = locust("storm", cluster, users + 2, 35, LOAD_RATE="20", LOAD_CHANNELS="10", STORM_SETTLE="8")
    summary(f"{users} users on app1, SIGKILLed", stats, "deliver", "catch-up", "replay", "refused", "echo")
    no_problems(stats)
    assert stats["catch-up"]["num_requests"] == users  # every user was on app1, and came back
    assert stats["catch-up"]["max_response_time"] <= 10_000
    state = json.loads((cluster[0] / "state.json").read_text())
    assert [slow_consumers(port) for port in state["backends"][1:]] == [0.0, 0.0]  # no cascade
