"""The results table ``make loadtest`` prints at the end of a run (``loadtest/summary.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def row(name: str, times: dict[str, int], failures: int = 0) -> dict[str, object]:
    return {
        "name": name,
        "num_requests": sum(times.values()),
        "num_failures": failures,
        "response_times": times,
        "max_response_time": max((float(ms) for ms in times), default=0.0),
    }


def test_the_table_counts_deliveries_latency_losses_and_duplicates(tmp_path: Path) -> None:
    stats = [
        row("connect chat", {"3": 10}),
        row("deliver chat", {"2": 60, "4": 30}),
        row("deliver global", {"5": 9, "40": 1}),
        row("lost", {"0": 3}, failures=3),
        row("duplicate", {"0": 2}, failures=2),
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(stats))
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.summary", str(path), "--users", "24"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table = dict(line.split("  ", 1) for line in out.splitlines())
    table = {name.strip(): value.strip() for name, value in table.items()}
    assert table == {
        "users": "24",
        "deliveries": "100",
        "latency p50": "2 ms",  # 60 of 100 deliveries took 2 ms
        "latency p99": "5 ms",  # the 99th of 100 is in the 5 ms bucket
        "lost": "3",
        "duplicates": "2",
        "failures (all)": "5",
    }


def test_make_loadtest_prints_the_table_when_the_run_ends() -> None:
    recipe = subprocess.run(
        ["make", "-n", "-s", "loadtest", "USERS=7", "SCENARIO=churn"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    locust = recipe.index("--json-file loadtest/results/churn")
    summary = recipe.index("-m loadtest.summary loadtest/results/churn.json --users 7")
    assert locust < summary
