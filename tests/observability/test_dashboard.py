"""The Grafana dashboard's structure, and generated files kept in step with their sources."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from scripts import observability
from tests.observability import panels

BOARD: dict[str, Any] = json.loads(observability.DASHBOARD.read_text())
PANELS = [p for p in BOARD["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("path", list(observability.outputs()), ids=lambda p: p.name)
def test_generated_files_are_up_to_date(path: Any) -> None:
    assert path.read_text() == observability.outputs()[path], "run `make observability-sync` and commit"


def test_ids_are_unique() -> None:
    ids = [p["id"] for p in BOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: set[tuple[int, int]] = set()
    for p in BOARD["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0
        assert min(pos["w"], pos["h"]) > 0
        assert pos["x"] + pos["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine


def test_every_target_has_a_ref_id_and_an_expression() -> None:
    for p in PANELS:
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for t in p["targets"]:
            assert t["refId"], p["title"]
            assert t["expr"].strip(), p["title"]
            assert "$instance" in t["expr"], f"{p['title']} ignores the instance variable"


def test_instance_variable_and_required_panels() -> None:
    variables = {v["name"]: v for v in BOARD["templating"]["list"]}
    assert "label_values" in variables["instance"]["definition"]
    exprs = " ".join(t["expr"] for p in PANELS for t in p["targets"])
    for metric in [
        "switchboard_connections",
        "switchboard_connects_total",
        "switchboard_disconnects_total",
        "switchboard_messages_received_total",
        "switchboard_messages_delivered_total",
        "switchboard_broadcast_fanout_seconds_bucket",
        "switchboard_publish_to_delivery_seconds_bucket",
        "switchboard_broker_up",
        "switchboard_broker_reconnects_total",
        "switchboard_slow_consumer_disconnects_total",
        "switchboard_rate_limited_total",
        "switchboard_auth_failures_total",
        "switchboard_process_cpu_seconds_total",
        "switchboard_process_resident_memory_bytes",
    ]:
        assert re.search(rf"\b{metric}\b", exprs), metric


def test_k8s_rule_and_dashboard_copies_carry_the_same_content() -> None:
    rule = yaml.safe_load(observability.K8S_RULES.read_text())
    assert rule["spec"] == yaml.safe_load(observability.RULES.read_text())
    configmap = yaml.safe_load(observability.K8S_DASHBOARD.read_text())
    assert json.loads(configmap["data"]["switchboard.json"]) == BOARD


def test_every_registered_metric_has_a_panel() -> None:
    """Every metric the app defines, exercised or not, is queried by a panel (or allowlisted with a
    reason in tests/observability/panels.py). The live check after real traffic is in
    test_prometheus_e2e.py; this one also covers metrics that traffic there does not reach."""
    import prometheus_client

    import app.main  # noqa: F401  (imports every module that defines metrics)

    found = list(prometheus_client.REGISTRY.collect())
    assert len([f for f in found if f.name.startswith("switchboard_")]) >= 30
    assert not panels.without_panel(found), "add a panel in scripts/observability.py"


def test_the_allowlist_excuses_only_what_it_names() -> None:
    assert panels.allowed("process_open_fds")
    assert panels.allowed("python_info")
    assert not panels.allowed("python_info_extra")
    assert not panels.allowed("switchboard_process_cpu_seconds")
    assert panels.allowed("switchboard_connects_created")
    assert not panels.allowed("switchboard_created_things")
