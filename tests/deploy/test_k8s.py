"""Both overlays rendered by kustomize, validated by kubernetes-validate, and cross-checked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.broker import HistoryOptions
from app.config import Settings
from app.main import create_app
from app.namespaces import load_namespaces
from tests.support import ROOT, TEST_SECRET

OVERLAYS = ["dev", "prod"]
# Oldest and newest Kubernetes minors we support.
VERSIONS = ["1.28.0", "1.37.0"]
# Custom resources validated by their operators, not by the core schemas.
CRD_ALLOWLIST = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def render(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_validate_strictly(overlay: str, version: str) -> None:
    for doc in render(overlay):
        key = (doc["apiVersion"], doc["kind"])
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert key in CRD_ALLOWLIST, f"no schema for {key} in {version}: unknown kind or removed apiVersion"
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}/{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cross_references(overlay: str) -> None:
    docs = render(overlay)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"switchboard"}
    deployment = one(docs, "Deployment", "switchboard")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    container = pod["spec"]["containers"][0]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}

    service = one(docs, "Service", "switchboard")
    assert matches(service["spec"]["selector"], labels)
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names
    service_ports = {p["name"] for p in service["spec"]["ports"]}

    pdb = one(docs, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    for spread in pod["spec"]["topologySpreadConstraints"]:
        assert matches(spread["labelSelector"]["matchLabels"], labels)

    hpa = one(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert find(docs, target["kind"], target["name"]), f"HPA target {target} does not exist"

    for rule in one(docs, "Ingress")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert find(docs, "Service", backend["name"])
            assert backend["port"]["name"] in service_ports
    monitor = one(docs, "ServiceMonitor")
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics"}
    # Metrics live on their own port: the public Ingress only ever routes to "http".
    ingress_ports = {
        p["backend"]["service"]["port"]["name"]
        for r in one(docs, "Ingress")["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    assert ingress_ports == {"http"}
    dockerfile_port = re.search(r"SWITCHBOARD_PORT=(\d+)", (ROOT / "Dockerfile").read_text())
    assert dockerfile_port is not None
    assert port_names["http"] == int(dockerfile_port.group(1)), "k8s containerPort differs from the image's port"
    assert port_names["metrics"] == int(
        one(docs, "ConfigMap", "switchboard-config")["data"]["SWITCHBOARD_METRICS_PORT"]
    )

    # Probes name real ports and paths the app serves.
    routes = create_app(Settings(jwt_secret=TEST_SECRET)).openapi()["paths"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        http = container[probe]["httpGet"]
        assert http["port"] in port_names
        assert "get" in routes.get(http["path"], {}), f"{probe} path {http['path']} is not served by the app"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    # ConfigMap keys are real settings, and the grace period outlasts preStop + drain + shutdown.
    config = one(docs, "ConfigMap", "switchboard-config")["data"]
    for key in config:
        if key.startswith("SWITCHBOARD_"):
            assert key.removeprefix("SWITCHBOARD_").lower() in Settings.model_fields, key
    assert container["envFrom"][0]["configMapRef"] == {"name": "switchboard-config"}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > pre_stop + float(config["SWITCHBOARD_DRAIN_SECONDS"]) + 5

    # Service links would put SWITCHBOARD_PORT=tcp://... into the pod (test_launch_env.py runs it).
    assert pod["spec"]["enableServiceLinks"] is False

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert any(config["PROMETHEUS_MULTIPROC_DIR"].startswith(m) for m in mounts)

    for doc in docs:
        for value in (doc["metadata"].get("annotations") or {}).values():
            assert isinstance(value, str)


def test_dev_runs_redis_reachable_only_from_the_app() -> None:
    docs = render("dev")
    redis = one(docs, "StatefulSet", "redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert find(docs, "Service", "redis")
    policy = one(docs, "NetworkPolicy")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], redis_labels)
    app_labels = one(docs, "Deployment", "switchboard")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"], app_labels)
    assert one(docs, "ConfigMap", "switchboard-config")["data"]["SWITCHBOARD_BROKER_URL"].startswith("redis://redis:")


def test_prod_uses_external_redis_and_no_secret_is_committed() -> None:
    docs = render("prod")
    assert not find(docs, "StatefulSet")
    assert "redis://redis:" not in one(docs, "ConfigMap", "switchboard-config")["data"]["SWITCHBOARD_BROKER_URL"]
    assert not find(docs, "Secret")
    assert one(docs, "Deployment")["spec"]["replicas"] >= 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespaces_file_is_mounted_where_switchboard_config_points(overlay: str) -> None:
    docs = render(overlay)
    path = Path(one(docs, "ConfigMap", "switchboard-config")["data"]["SWITCHBOARD_CONFIG"])
    generated = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("switchboard-namespaces")
    ]
    assert len(generated) == 1
    assert generated[0]["data"][path.name] == (ROOT / "deploy" / "switchboard.toml").read_text()
    pod = one(docs, "Deployment", "switchboard")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == generated[0]["metadata"]["name"])
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert Path(mount["mountPath"]) == path.parent
    assert mount["readOnly"] is True
    # The shipped file loads: a pod would not crash-loop on it.
    load_namespaces(ROOT / "k8s" / "base" / "switchboard.toml", HistoryOptions())
