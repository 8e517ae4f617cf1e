#!/usr/bin/env python3
"""Generates the Grafana dashboard and its Kubernetes copies: ``make observability-sync``.

Writes:
  deploy/grafana/dashboards/switchboard.json   the dashboard (compose provisions it)
  k8s/base/grafana-dashboard.yaml               the same, as a ConfigMap for the Grafana sidecar
  k8s/base/prometheusrule.yaml                  deploy/prometheus/rules.yml as a PrometheusRule

tests/observability checks that the committed files equal what this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "switchboard.json"
K8S_DASHBOARD = ROOT / "k8s" / "base" / "grafana-dashboard.yaml"
K8S_RULES = ROOT / "k8s" / "base" / "prometheusrule.yaml"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"

SEL = 'instance=~"$instance"'
RATE = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
QUEUE_P99 = f"histogram_quantile(0.99, sum by (le) (rate(switchboard_send_queue_depth_bucket{{{SEL}}}[{RATE}])))"


def quantiles(metric: str) -> list[tuple[str, str]]:
    return [
        (f"p{int(q * 100)}", f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{SEL}}}[{RATE}])))")
        for q in (0.5, 0.99)
    ]


def by_rate(labels: str, selector: str) -> str:
    return f"sum by ({labels}) (rate({selector}[{RATE}]))"


# (row title, [(panel title, unit, kind, [(legend, expr), ...]), ...])
ROWS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]]]]]] = [
    (
        "Connections",
        [
            (
                "Connections per instance",
                "short",
                "timeseries",
                [("{{instance}}", f"sum by (instance) (switchboard_connections{{{SEL}}})")],
            ),
            ("Connections, total", "short", "stat", [("total", f"sum(switchboard_connections{{{SEL}}})")]),
            (
                "Connects by result /s",
                "ops",
                "timeseries",
                [("{{result}}", f"sum by (result) (rate(switchboard_connects_total{{{SEL}}}[{RATE}]))")],
            ),
            (
                "Disconnects by close code /s",
                "ops",
                "timeseries",
                [("{{code}}", f"sum by (code) (rate(switchboard_disconnects_total{{{SEL}}}[{RATE}]))")],
            ),
        ],
    ),
    (
        "Messages",
        [
            (
                "Messages in /s by endpoint",
                "ops",
                "timeseries",
                [("{{endpoint}}", f"sum by (endpoint) (rate(switchboard_messages_received_total{{{SEL}}}[{RATE}]))")],
            ),
            (
                "Deliveries /s",
                "ops",
                "timeseries",
                [
                    ("delivered", f"sum(rate(switchboard_messages_delivered_total{{{SEL}}}[{RATE}]))"),
                    ("broadcasts", f"sum(rate(switchboard_broadcasts_total{{{SEL}}}[{RATE}]))"),
                ],
            ),
            ("Fan-out duration", "s", "timeseries", quantiles("switchboard_broadcast_fanout_seconds")),
            ("Publish-to-delivery latency", "s", "timeseries", quantiles("switchboard_publish_to_delivery_seconds")),
        ],
    ),
    (
        "Broker and health",
        [
            (
                "Broker up",
                "short",
                "timeseries",
                [("{{instance}}", f"min by (instance) (switchboard_broker_up{{{SEL}}})")],
            ),
            ("Ready", "short", "timeseries", [("{{instance}}", f"min by (instance) (switchboard_ready{{{SEL}}})")]),
            (
                "Broker reconnects",
                "short",
                "timeseries",
                [
                    (
                        "{{instance}}",
                        f"sum by (instance) (increase(switchboard_broker_reconnects_total{{{SEL}}}[{RATE}]))",
                    )
                ],
            ),
            (
                "Channels with local members",
                "short",
                "timeseries",
                [("{{instance}}", f"sum by (instance) (switchboard_channels{{{SEL}}})")],
            ),
            (
                "Recoveries from history (lost: clients told to resync)",
                "short",
                "timeseries",
                [
                    (
                        "{{scope}} {{result}}",
                        f"sum by (scope, result) (increase(switchboard_recoveries_total{{{SEL}}}[{RATE}]))",
                    )
                ],
            ),
        ],
    ),
    (
        "Protection",
        [
            (
                "Slow-consumer disconnects /s",
                "ops",
                "timeseries",
                [("slow consumers", f"sum(rate(switchboard_slow_consumer_disconnects_total{{{SEL}}}[{RATE}]))")],
            ),
            (
                "Rate-limited frames /s",
                "ops",
                "timeseries",
                [("rate limited", f"sum(rate(switchboard_rate_limited_total{{{SEL}}}[{RATE}]))")],
            ),
            (
                "Auth failures /s by reason",
                "ops",
                "timeseries",
                [("{{reason}}", f"sum by (reason) (rate(switchboard_auth_failures_total{{{SEL}}}[{RATE}]))")],
            ),
            (
                "Send-queue depth when backed up (p99)",
                "short",
                "timeseries",
                [
                    (
                        "p99",
                        QUEUE_P99,
                    )
                ],
            ),
        ],
    ),
    (
        "Refusals and errors",
        [
            (
                "Connections refused /s by reason (admission, user limit, auth)",
                "ops",
                "timeseries",
                [("{{result}}", by_rate("result", f'switchboard_connects_total{{{SEL},result=~"refused_.*"}}'))],
            ),
            (
                "/ws command errors /s by code",
                "ops",
                "timeseries",
                [("{{code}}", by_rate("code", f"switchboard_command_errors_total{{{SEL}}}"))],
            ),
            (
                "Per-connection budgets holding clients back /s",
                "ops",
                "timeseries",
                [("{{budget}}", by_rate("budget", f"switchboard_budget_limited_total{{{SEL}}}"))],
            ),
            (
                "Publishes refused (broker down), protocol errors, background-loop errors /s",
                "ops",
                "timeseries",
                [
                    ("publish refused", by_rate("instance", f"switchboard_publish_failures_total{{{SEL}}}")),
                    ("protocol {{kind}}", by_rate("kind", f"switchboard_protocol_errors_total{{{SEL}}}")),
                    ("loop errors", by_rate("instance", f"switchboard_listener_errors_total{{{SEL}}}")),
                ],
            ),
        ],
    ),
    (
        "Hooks and proxies",
        [
            (
                "Hook failures /s by hook (each refused its request)",
                "ops",
                "timeseries",
                [("{{hook}}", by_rate("hook", f"switchboard_hook_failures_total{{{SEL}}}"))],
            ),
            (
                "Hook overruns /s by hook (still running at the deadline)",
                "ops",
                "timeseries",
                [("{{hook}}", by_rate("hook", f"switchboard_hook_overruns_total{{{SEL}}}"))],
            ),
            (
                "Proxy calls /s by kind and result",
                "ops",
                "timeseries",
                [("{{kind}} {{result}}", by_rate("kind, result", f"switchboard_proxy_calls_total{{{SEL}}}"))],
            ),
            (
                "Proxy call duration p99 by kind",
                "s",
                "timeseries",
                [
                    (
                        "{{kind}}",
                        "histogram_quantile(0.99, sum by (kind, le)"
                        f" (rate(switchboard_proxy_call_seconds_bucket{{{SEL}}}[{RATE}])))",
                    )
                ],
            ),
        ],
    ),
    (
        "Presence sweeps and identity providers",
        [
            (
                "Presence sweeps /s by result, members of dead instances announced /s",
                "ops",
                "timeseries",
                [
                    ("sweeps {{result}}", by_rate("result", f"switchboard_presence_sweeps_total{{{SEL}}}")),
                    ("members expired", by_rate("instance", f"switchboard_presence_expired_total{{{SEL}}}")),
                ],
            ),
            (
                "Presence sweep lag (oldest channel waiting)",
                "s",
                "timeseries",
                [("{{instance}}", f"max by (instance) (switchboard_presence_sweep_lag_seconds{{{SEL}}})")],
            ),
            (
                "JWKS fetches /s by result; entries refused /s",
                "ops",
                "timeseries",
                [
                    ("fetch {{result}}", by_rate("result", f"switchboard_jwks_fetches_total{{{SEL}}}")),
                    ("refused {{reason}}", by_rate("reason", f"switchboard_jwks_keys_refused_total{{{SEL}}}")),
                ],
            ),
            (
                "JWKS signing keys held by provider",
                "short",
                "timeseries",
                [("{{provider}}", f"min by (provider) (switchboard_jwks_keys{{{SEL}}})")],
            ),
            (
                "JWKS keys expire in (negative: stale, fetches failing)",
                "s",
                "timeseries",
                [
                    (
                        "{{provider}}",
                        f"min by (provider) (switchboard_jwks_keys_expiry_timestamp_seconds{{{SEL}}}) - time()",
                    )
                ],
            ),
        ],
    ),
    (
        "Outbox",
        [
            (
                "Outbox lag (oldest pending row)",
                "s",
                "timeseries",
                [("lag", f"max(switchboard_outbox_oldest_pending_seconds{{{SEL}}})")],
            ),
            (
                "Outbox rows pending",
                "short",
                "timeseries",
                [("pending", f"max(switchboard_outbox_pending_rows{{{SEL}}})")],
            ),
            (
                "Outbox rows /s",
                "ops",
                "timeseries",
                [
                    ("delivered", f"sum(rate(switchboard_outbox_delivered_total{{{SEL}}}[{RATE}]))"),
                    ("dead-lettered", f"sum(rate(switchboard_outbox_dead_lettered_total{{{SEL}}}[{RATE}]))"),
                ],
            ),
            (
                "Outbox relay errors",
                "short",
                "timeseries",
                [("{{instance}}", f"sum by (instance) (increase(switchboard_outbox_errors_total{{{SEL}}}[{RATE}]))")],
            ),
        ],
    ),
    (
        "Process",
        [
            (
                "CPU (cores)",
                "short",
                "timeseries",
                [("{{instance}}", f"sum by (instance) (rate(switchboard_process_cpu_seconds_total{{{SEL}}}[{RATE}]))")],
            ),
            (
                "Resident memory",
                "bytes",
                "timeseries",
                [("{{instance}}", f"sum by (instance) (switchboard_process_resident_memory_bytes{{{SEL}}})")],
            ),
            (
                "Memory per connection",
                "bytes",
                "timeseries",
                [
                    (
                        "{{instance}}",
                        f"sum by (instance) (switchboard_process_resident_memory_bytes{{{SEL}}})"
                        f" / clamp_min(sum by (instance) (switchboard_connections{{{SEL}}}), 1)",
                    )
                ],
            ),
            (
                "Build",
                "short",
                "table",
                [("{{version}}", f"max by (instance, version, python) (switchboard_build_info{{{SEL}}})")],
            ),
        ],
    ),
    (
        "Admin UI",
        [
            (
                "Admin sign-ins /s by outcome (limited: an address over its failures)",
                "ops",
                "timeseries",
                [("{{outcome}}", by_rate("outcome", f"switchboard_admin_sign_ins_total{{{SEL}}}"))],
            ),
            (
                "Admin actions /s by method and outcome",
                "ops",
                "timeseries",
                [("{{method}} {{outcome}}", by_rate("method, outcome", f"switchboard_admin_actions_total{{{SEL}}}"))],
            ),
        ],
    ),
]


def panel(pid: int, title: str, unit: str, kind: str, targets: list[tuple[str, str]], x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 6, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y, pid = 0, 1
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        for i, (title, unit, kind, targets) in enumerate(row_panels):
            panels.append(panel(pid, title, unit, kind, targets, x=6 * (i % 4), y=y + 8 * (i // 4)))
            pid += 1
        y += 8 * ((len(row_panels) + 3) // 4)
    return {
        "uid": "switchboard",
        "title": "Switchboard",
        "tags": ["switchboard", "websocket"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                {
                    "name": "instance",
                    "type": "query",
                    "label": "Instance",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(switchboard_connections, instance)", "refId": "instances"},
                    "definition": "label_values(switchboard_connections, instance)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                    "sort": 1,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }


def outputs() -> dict[Path, str]:
    board = json.dumps(dashboard(), indent=2) + "\n"
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        # The Grafana sidecar (kube-prometheus-stack) loads ConfigMaps with this label.
        "metadata": {"name": "switchboard-dashboard", "labels": {"grafana_dashboard": "1"}},
        "data": {"switchboard.json": board},
    }
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "switchboard", "labels": {"app.kubernetes.io/name": "switchboard"}},
        "spec": yaml.safe_load(RULES.read_text()),
    }
    header = "# Generated by `make observability-sync` from {}; do not edit.\n"
    return {
        DASHBOARD: board,
        K8S_DASHBOARD: header.format("scripts/observability.py")
        + yaml.safe_dump(configmap, sort_keys=False, width=200),
        K8S_RULES: header.format("deploy/prometheus/rules.yml") + yaml.safe_dump(rule, sort_keys=False, width=200),
    }


def main() -> None:
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
