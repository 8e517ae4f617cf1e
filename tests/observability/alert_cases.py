"""promtool rule-test helpers, and the cases for the newer failure modes' alerts (proxies, identity
providers, admission, presence sweeps, hooks); test_rules.py runs them with its own cases."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
JOB = 'job="switchboard"'


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def description(alert: str) -> str:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                text: str = rule["annotations"]["description"]
                return text
    raise KeyError(alert)


def fires(alert: str, at: str, labels: dict[str, str], summary: str) -> dict[str, Any]:
    expected = {"exp_labels": labels, "exp_annotations": {"summary": summary, "description": description(alert)}}
    return {"eval_time": at, "alertname": alert, "exp_alerts": [expected]}


def quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def counter(name: str, per_step: float, steps: int = 20, labels: str = "") -> dict[str, str]:
    """A counter growing by ``per_step`` every 30 s."""
    return {"series": f'{name}{{{JOB},instance="a:8000"{labels}}}', "values": f"0+{per_step}x{steps}"}


NEWER_CASES: dict[str, dict[str, Any]] = {
    "a sixth of the connect proxy's calls unreachable": {
        "input_series": [
            counter("switchboard_proxy_calls_total", 10, 30, ',kind="connect",result="ok"'),
            counter("switchboard_proxy_calls_total", 2, 30, ',kind="connect",result="unreachable"'),
            counter("switchboard_proxy_calls_total", 10, 30, ',kind="publish",result="ok"'),
        ],
        "alert_rule_test": [
            quiet("SwitchboardProxyErrorRate", "3m"),
            fires(
                "SwitchboardProxyErrorRate",
                "12m",
                {"severity": "warning", "job": "switchboard", "kind": "connect"},
                "16.67% of connect proxy calls fail",
            ),
        ],
    },
    "the backend's own refusals, and a rare timeout, stay quiet": {
        "input_series": [
            counter("switchboard_proxy_calls_total", 10, 30, ',kind="subscribe",result="ok"'),
            counter("switchboard_proxy_calls_total", 10, 30, ',kind="subscribe",result="error"'),
            counter("switchboard_proxy_calls_total", 0.1, 30, ',kind="rpc",result="ok"'),
            counter("switchboard_proxy_calls_total", 0.2, 30, ',kind="rpc",result="timeout"'),  # 67 %, 0.4/min
        ],
        "alert_rule_test": [quiet("SwitchboardProxyErrorRate", "12m")],
    },
    "JWKS fetches failing and the keys held past their expiry": {
        "input_series": [
            {
                "series": f'switchboard_jwks_keys_expiry_timestamp_seconds{{{JOB},instance="a:8000",provider="kc"}}',
                "values": "300x40",  # fetched once; expired at 5 min
            },
            counter("switchboard_jwks_fetches_total", 1, 40, ',result="timeout"'),
            counter("switchboard_jwks_fetches_total", 0, 40, ',result="ok"'),
        ],
        "alert_rule_test": [
            quiet("SwitchboardJwksKeysStale", "6m"),
            fires(
                "SwitchboardJwksKeysStale",
                "12m",
                {"severity": "warning", "job": "switchboard", "instance": "a:8000", "provider": "kc"},
                "a:8000 checks kc tokens against keys expired 7m 0s ago",
            ),
        ],
    },
    "a failed JWKS fetch, then refreshed keys, stays quiet": {
        "input_series": [
            {
                "series": f'switchboard_jwks_keys_expiry_timestamp_seconds{{{JOB},instance="a:8000",provider="kc"}}',
                "values": "300+30x40",  # refreshed every 30 s: always ahead
            },
            {"series": f'switchboard_jwks_fetches_total{{{JOB},instance="a:8000",result="error"}}', "values": "0 1x40"},
        ],
        "alert_rule_test": [quiet("SwitchboardJwksKeysStale", "12m")],
    },
    "handshakes refused for over ten minutes": {
        "input_series": [counter("switchboard_connects_total", 60, 40, ',result="refused_full"')],  # 2/s
        "alert_rule_test": [
            quiet("SwitchboardAdmissionRefusalsSustained", "5m"),
            fires(
                "SwitchboardAdmissionRefusalsSustained",
                "14m",
                {"severity": "warning", "job": "switchboard"},
                "2 handshakes per second refused for 10 minutes",
            ),
        ],
    },
    "a reconnect storm spread over two minutes stays quiet": {
        "input_series": [
            {
                "series": f'switchboard_connects_total{{{JOB},instance="a:8000",result="refused_rate"}}',
                "values": "0 0 600 1200 1800 2400 2400x40",
            },
            counter("switchboard_connects_total", 0, 40, ',result="refused_user_limit"'),
        ],
        "alert_rule_test": [quiet("SwitchboardAdmissionRefusalsSustained", t) for t in ("5m", "9m", "15m")],
    },
    "the presence sweep 45 s behind": {
        "input_series": [
            {"series": f'switchboard_presence_sweep_lag_seconds{{{JOB},instance="a:8000"}}', "values": "0 0 45x20"},
            {"series": f'switchboard_presence_sweep_lag_seconds{{{JOB},instance="b:8000"}}', "values": "0x22"},
        ],
        "alert_rule_test": [
            quiet("SwitchboardPresenceSweepBehind", "2m"),
            fires(
                "SwitchboardPresenceSweepBehind",
                "4m",
                {"severity": "warning", "job": "switchboard"},
                "The presence sweeper is falling behind",
            ),
        ],
    },
    "every presence sweep round failing": {
        "input_series": [
            counter("switchboard_presence_sweeps_total", 30, 20, ',result="error"'),
            counter("switchboard_presence_sweeps_total", 0, 20, ',result="ok"'),
        ],
        "alert_rule_test": [
            fires(
                "SwitchboardPresenceSweepBehind",
                "5m",
                {"severity": "warning", "job": "switchboard"},
                "The presence sweeper is falling behind",
            ),
        ],
    },
    "a sweep a round behind, and a failed round among good ones, stay quiet": {
        "input_series": [
            {"series": f'switchboard_presence_sweep_lag_seconds{{{JOB},instance="a:8000"}}', "values": "1.5x20"},
            counter("switchboard_presence_sweeps_total", 1, 20, ',result="error"'),
            counter("switchboard_presence_sweeps_total", 29, 20, ',result="ok"'),
        ],
        "alert_rule_test": [quiet("SwitchboardPresenceSweepBehind", "8m")],
    },
    "a hook failing steadily": {
        "input_series": [counter("switchboard_hook_failures_total", 2, 30, ',hook="on_subscribe"')],
        "alert_rule_test": [
            fires(
                "SwitchboardHookFailures",
                "12m",
                {"severity": "warning", "job": "switchboard", "hook": "on_subscribe"},
                "The on_subscribe hook failed 20 times in 5 minutes",
            ),
        ],
    },
    "a rare hook failure stays quiet": {
        "input_series": [counter("switchboard_hook_failures_total", 0.1, 30, ',hook="on_connect"')],
        "alert_rule_test": [quiet("SwitchboardHookFailures", "12m")],
    },
}
