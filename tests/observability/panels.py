"""Which exported metrics have a place on the Grafana dashboard: shared by the static check
(tests/observability/test_dashboard.py) and the one after real traffic (test_prometheus_e2e.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from scripts import observability

# Metrics that need no panel of their own, each with the reason. Keep it short: a new metric
# belongs on the dashboard, not here.
ALLOWLIST: dict[str, str] = {
    # prometheus-client's default collectors, exported by a single-process instance only (they do
    # not work under gunicorn's multiprocess mode): the Process row uses switchboard_process_*,
    # which both modes export.
    "python_gc_": "default collector: garbage-collector stats of one process",
    "python_info": "default collector: the interpreter version (switchboard_build_info has it too)",
    "process_": "default collector: single-process only; see switchboard_process_*",
    # prometheus-client writes each counter's and histogram's creation time as a series of its own
    # (parsed from the text as a gauge family "<name>_created"): bookkeeping, not a measurement.
    "*_created": "a counter's or histogram's creation timestamp",
}


def panel_exprs() -> str:
    """Every panel target's expression, in one string."""
    board = json.loads(observability.DASHBOARD.read_text())
    return "\n".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))


def allowed(family: str) -> bool:
    """Allowlisted by exact name, by prefix (a key ending in ``_``) or by suffix (``*_suffix``)."""
    return any(
        family == name
        or (name.endswith("_") and family.startswith(name))
        or (name.startswith("*") and family.endswith(name[1:]))
        for name in ALLOWLIST
    )


def sample_names(family: Metric) -> set[str]:
    """The series names a family exports (``_created`` is client bookkeeping, never queried)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum"]}
    names = {family.name + s for s in suffixes.get(family.type, [""])}
    names |= {s.name for s in family.samples}
    return {n for n in names if not n.endswith("_created")}


def without_panel(families: Iterable[Metric]) -> list[str]:
    """The families (by name) that no panel queries and the allowlist does not excuse."""
    exprs = panel_exprs()
    return sorted(
        {
            f.name
            for f in families
            if not allowed(f.name) and not any(re.search(rf"\b{re.escape(n)}\b", exprs) for n in sample_names(f))
        }
    )


def families(text: str) -> list[Metric]:
    return list(text_string_to_metric_families(text))
