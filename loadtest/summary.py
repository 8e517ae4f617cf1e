"""The results table ``make loadtest`` prints when a run ends, read from Locust's JSON summary.

    python -m loadtest.summary loadtest/results/mixed.json --users 100

Locust's own ``--only-summary`` table lists requests by name; what a run is for is fewer numbers:
how many users, how many messages reached them, how fast (publish to receive, p50 and p99), and
how many were lost or came twice. ``lost`` and ``duplicate`` are the failure rows every scenario
reports (one per missing or repeated message).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from loadtest.stats import percentile

DUPLICATES = ("duplicate", "out of order")


def merged(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One histogram row for several requests (the deliveries of every endpoint)."""
    if not rows:
        return None
    times: Counter[str] = Counter()
    for row in rows:
        times.update({str(ms): count for ms, count in row["response_times"].items()})
    return {
        "num_requests": sum(row["num_requests"] for row in rows),
        "response_times": dict(times),
        "max_response_time": max(row["max_response_time"] for row in rows),
    }


def summarize(stats: list[dict[str, Any]], users: int) -> dict[str, Any]:
    by_name = {row["name"]: row for row in stats}
    deliveries = merged([row for row in stats if row["name"].startswith("deliver")])

    def count(*names: str) -> int:
        return sum(by_name[name]["num_requests"] for name in names if name in by_name)

    return {
        "users": users,
        "deliveries": deliveries["num_requests"] if deliveries else 0,
        "p50_ms": percentile(deliveries, 0.5),
        "p99_ms": percentile(deliveries, 0.99),
        "lost": count("lost"),
        "duplicates": count(*DUPLICATES),
        "failures": sum(row["num_failures"] for row in stats),
    }


def table(summary: dict[str, Any]) -> str:
    def ms(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:g} ms"

    cells = [
        ("users", str(summary["users"])),
        ("deliveries", str(summary["deliveries"])),
        ("latency p50", ms(summary["p50_ms"])),
        ("latency p99", ms(summary["p99_ms"])),
        ("lost", str(summary["lost"])),
        ("duplicates", str(summary["duplicates"])),
        ("failures (all)", str(summary["failures"])),
    ]
    width = max(len(name) for name, _ in cells)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json_file", type=Path, help="Locust's --json-file output (with .json)")
    parser.add_argument("--users", type=int, required=True, help="the run's -u")
    args = parser.parse_args(argv)
    stats = json.loads(args.json_file.read_text())
    print(table(summarize(stats, args.users)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
