"""promtool on the Prometheus config and rules, and unit tests that make every alert fire and stay quiet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.alert_cases import JOB, NEWER_CASES, RULES, counter, fires, promtool, quiet

CASES: dict[str, dict[str, Any]] = {
    **NEWER_CASES,
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
    "outbox rows waiting over a minute, for 5 minutes": {
        "input_series": [
            {"series": f'switchboard_outbox_oldest_pending_seconds{{{JOB},instance="a:8000"}}', "values": "0 0+30x20"},
            {"series": f'switchboard_outbox_oldest_pending_seconds{{{JOB},instance="b:8000"}}', "values": "0x20"},
        ],
        "alert_rule_test": [
            quiet("SwitchboardOutboxLagging", "4m"),
            fires(
                "SwitchboardOutboxLagging",
                "8m",
                {"severity": "warning", "job": "switchboard"},
                "The oldest outbox row has waited 7m 30s",
            ),
        ],
    },
    "a short outbox lag stays quiet": {
        "input_series": [
            {
                "series": f'switchboard_outbox_oldest_pending_seconds{{{JOB},instance="a:8000"}}',
                "values": "0 90 90 90 0x10",
            },
        ],
        "alert_rule_test": [quiet("SwitchboardOutboxLagging", "2m"), quiet("SwitchboardOutboxLagging", "6m")],
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
