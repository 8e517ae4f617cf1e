"""Reading Locust's JSON summary (``--json-file``). No Locust import: it monkey-patches whatever
imports it, and the tests and benchmarks read summaries from outside the Locust process."""

from __future__ import annotations

from typing import Any


def percentile(row: dict[str, Any] | None, q: float) -> float:
    """A request's ``q`` quantile in milliseconds, from Locust's response-time histogram (rounded
    as Locust rounds them); NaN for a request that never happened."""
    if not row or not row["num_requests"]:
        return float("nan")
    times = sorted((float(ms), count) for ms, count in row["response_times"].items())
    wanted, seen = q * row["num_requests"], 0
    for ms, count in times:
        seen += count
        if seen >= wanted:
            return ms
    return float(row["max_response_time"])
