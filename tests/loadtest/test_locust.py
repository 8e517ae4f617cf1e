"""A short, bounded Locust run (as a subprocess: locust monkey-patches whatever imports it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import start_cluster
from tests.support import ROOT, running


def test_locust_run_has_requests_and_no_failures(tmp_path: Path) -> None:
    redis_server, a, b = start_cluster(tmp_path)
    try:
        with running(a, b):
            env = {**os.environ, "LOAD_ROOMS": "2", "PUBLISH_RATE": "20"}
            result = subprocess.run(
                [
                    str(Path(sys.executable).parent / "locust"),
                    "-f",
                    str(ROOT / "loadtest" / "locustfile.py"),
                    "--headless",
                    "-u",
                    "24",
                    "-r",
                    "24",
                    "-t",
                    "8s",
                    "--host",
                    a.http,
                    "--only-summary",
                    "--json-file",
                    str(tmp_path / "summary"),
                ],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
        assert result.returncode == 0, result.stderr[-3000:]
        stats = {row["name"]: row for row in json.loads((tmp_path / "summary.json").read_text())}
    finally:
        redis_server.stop()
    failures = {name: row["num_failures"] for name, row in stats.items() if row["num_failures"]}
    assert not failures, failures
    for name in ("connect chat", "connect room", "connect global", "deliver chat", "deliver room", "deliver global"):
        assert stats[name]["num_requests"] > 0, name
    # The publisher's stream reached its subscribers: at least a few messages each.
    assert stats["deliver global"]["num_requests"] > stats["send global"]["num_requests"]
    # And the table `make loadtest` prints at the end says so.
    printed = subprocess.run(
        [sys.executable, "-m", "loadtest.summary", str(tmp_path / "summary.json"), "--users", "24"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in printed.splitlines()}
    delivered = sum(row["num_requests"] for name, row in stats.items() if name.startswith("deliver"))
    assert (table["users"], table["deliveries"], table["lost"], table["duplicates"]) == ("24", str(delivered), "0", "0")
    assert table["latency p99"].endswith(" ms"), table
