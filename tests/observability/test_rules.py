"""promtool on the Prometheus config and rules, and unit tests that make every alert fire and stay quiet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
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


CASES: dict[str, dict[str, Any]] = {
    "broker down on one instance, for over a minute": {
        "input_series": [
            {"series": f'switchboard_broker_up{{{JOB},instance="a:8000"}}', "values": "1 0 0 0 0 0"},
            {"series": f'switchboard_broker_up{{{JOB},instance="b:8000"}}', "values": "1 1 1 1 1 1"},
        ],
        "alert_rule_test": [
            quiet("SwitchboardBrokerDown", "30s"),
            fires(
                "SwitchboardBrokerDown",
                "2m",
                {"severity": "critical", "instance": "a:8000"},
                "a:8000 has lost its Redis connection",
            ),
        ],
    },
    "not ready for over two minutes; a short drain stays quiet": {
        "input_series": [
            {"series": f'switchboard_ready{{{JOB},instance="a:8000"}}', "values": "1 0 0 0 0 0 0 0"},
            {"series": f'switchboard_ready{{{JOB},instance="b:8000"}}', "values": "1 0 1 1 1 1 1 1"},
            {"series": f'up{{{JOB},instance="a:8000"}}', "values": "1 1 1 1 1 1 1 1"},
        ],
        "alert_rule_test": [
            quiet("SwitchboardInstanceNotReady", "1m"),
            fires(
                "SwitchboardInstanceNotReady",
                "3m",
                {"severity": "warning", "instance": "a:8000"},
                "a:8000 has not been ready for 2 minutes",
            ),
        ],
    },
    "p99 delivery latency above 500 ms for 5 minutes": {
        "input_series": [
            # 10 observations per 30 s, all between 0.5 and 1 s.
            {"series": f'switchboard_publish_to_delivery_seconds_bucket{{{JOB},le="0.5"}}', "values": "0x30"},
            {"series": f'switchboard_publish_to_delivery_seconds_bucket{{{JOB},le="1.0"}}', "values": "0+10x30"},
            {"series": f'switchboard_publish_to_delivery_seconds_bucket{{{JOB},le="+Inf"}}', "values": "0+10x30"},
        ],
        "alert_rule_test": [
            quiet("SwitchboardDeliveryLatencyHigh", "3m"),
            fires(
                "SwitchboardDeliveryLatencyHigh",
                "12m",
                {"severity": "warning", "job": "switchboard"},
                "p99 publish-to-delivery latency is 995ms",
            ),
        ],
    },
    "fast delivery stays quiet": {
        "input_series": [
            {"series": f'switchboard_publish_to_delivery_seconds_bucket{{{JOB},le="0.005"}}', "values": "0+10x30"},
            {"series": f'switchboard_publish_to_delivery_seconds_bucket{{{JOB},le="+Inf"}}', "values": "0+10x30"},
        ],
        "alert_rule_test": [quiet("SwitchboardDeliveryLatencyHigh", "12m")],
    },
    "slow-consumer surge": {
        "input_series": [counter("switchboard_slow_consumer_disconnects_total", 10, 30)],  # 20/min
        "alert_rule_test": [
            fires(
                "SwitchboardSlowConsumerSurge",
                "12m",
                {"severity": "warning", "job": "switchboard"},
                "More than 10 slow-consumer disconnects per minute",
            ),
        ],
    },
    "a few slow consumers stay quiet": {
        "input_series": [counter("switchboard_slow_consumer_disconnects_total", 1, 30)],  # 2/min
        "alert_rule_test": [quiet("SwitchboardSlowConsumerSurge", "12m")],
    },
    "connection-drop spike, but not a drain": {
        "input_series": [
            {"series": f'switchboard_connections{{{JOB},instance="a:8000",endpoint="chat"}}', "values": "200x20"},
            counter("switchboard_disconnects_total", 30, 20, ',code="1006"'),
            counter("switchboard_disconnects_total", 500, 20, ',code="1012"'),
        ],
        "alert_rule_test": [
            fires(
                "SwitchboardConnectionDropSpike",
                "6m",
                {"severity": "warning", "job": "switchboard"},
                "300 abnormal disconnects in 5 minutes",
            ),
        ],
    },
    "a drain (1012) is not a drop": {
        "input_series": [
            {"series": f'switchboard_connections{{{JOB},instance="a:8000",endpoint="chat"}}', "values": "200x20"},
            counter("switchboard_disconnects_total", 500, 20, ',code="1012"'),
            counter("switchboard_disconnects_total", 1, 20, ',code="1006"'),
        ],
        "alert_rule_test": [quiet("SwitchboardConnectionDropSpike", "6m")],
    },
    "auth-failure spike": {
        "input_series": [counter("switchboard_auth_failures_total", 30, 30, ',reason="expired"')],  # 60/min
        "alert_rule_test": [
            fires(
                "SwitchboardAuthFailureSpike",
                "12m",
                {"severity": "warning", "job": "switchboard"},
                "More than 30 authentication failures per minute",
            ),
        ],
    },
    "clients told to resync after history was lost": {
        "input_series": [
            counter("switchboard_recoveries_total", 0, 10, ',scope="channel",result="ok"'),
            {
                "series": f'switchboard_recoveries_total{{{JOB},instance="a:8000",scope="channel",result="lost"}}',
                "values": "0 0 0 0 12 12 12 12 12 12",
            },
        ],
        "alert_rule_test": [
            quiet("SwitchboardHistoryLost", "1m"),
            fires(
                "SwitchboardHistoryLost",
                "3m",
                {"severity": "warning", "job": "switchboard"},
                "Clients were told to resync 12 times in 5 minutes",
            ),
        ],
    },
    "successful recoveries stay quiet": {
        "input_series": [counter("switchboard_recoveries_total", 5, 20, ',scope="client",result="ok"')],
        "alert_rule_test": [quiet("SwitchboardHistoryLost", "8m")],
    },
    "occasional auth failures stay quiet": {
        "input_series": [counter("switchboard_auth_failures_total", 2, 30, ',reason="expired"')],
        "alert_rule_test": [quiet("SwitchboardAuthFailureSpike", "12m")],
    },
    # -- proxies, identity providers, admission, presence sweeps, hooks
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


def test_prometheus_config_and_rules_check() -> None:
    config = promtool("check", "config", "--syntax-only", "deploy/prometheus/prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_every_alert_has_a_case_that_fires() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    fired = {t["alertname"] for case in CASES.values() for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == fired


@pytest.mark.parametrize("case", list(CASES))
def test_alert_unit_tests(case: str, tmp_path: Path) -> None:
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "30s", "tests": [{"interval": "30s", **CASES[case]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
