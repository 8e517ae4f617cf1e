"""docs/deploy.md's monitoring without the Prometheus Operator or the Grafana sidecar: the plain
scrape configuration passes ``promtool check config`` with the real rules beside it, and both
examples select what k8s/base and the provisioning files actually name."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.docs_examples import example
from tests.support import ROOT

PAGE = "docs/deploy.md"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
BASE = ROOT / "k8s" / "base"


def scrape_config() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(example(PAGE, "prometheus-scrape-config"))
    return found


def meta_label(name: str) -> str:
    """Kubernetes service discovery's meta label for a pod label (non-alphanumerics become ``_``)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def promtool_check(config: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(ROOT / "deploy" / "prometheus" / "rules.yml", workdir / "switchboard-rules.yml")
    return subprocess.run(
        [PROMTOOL, "check", "config", "prometheus.yml"], cwd=workdir, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_scrape_config_and_its_rules(tmp_path: Path) -> None:
    """As written; Debian's Prometheus is built without Kubernetes discovery, though, and refuses
    the field itself. There the discovery block is checked here and promtool checks the rest (the
    relabelling, the job, the rules file) with the same pods as static targets."""
    config = scrape_config()
    result = promtool_check(config, tmp_path)
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        (job,) = config["scrape_configs"]
        (sd,) = job.pop("kubernetes_sd_configs")
        namespace = yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"]
        assert sd == {"role": "pod", "namespaces": {"names": [namespace]}}
        job["static_configs"] = [{"targets": ["10.0.0.1:9000"]}]
        result = promtool_check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr  # the rules were loaded too


def test_the_scrape_config_keeps_exactly_the_pods_metrics_port() -> None:
    (job,) = scrape_config()["scrape_configs"]
    assert job["job_name"] == "switchboard"  # what the alerts select
    assert 'job="switchboard"' in (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()
    (keep,) = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert "metrics" in ports

    def kept(labels: dict[str, str], port: str) -> bool:
        meta = {**{meta_label(k): v for k, v in labels.items()}, "__meta_kubernetes_pod_container_port_name": port}
        value = ";".join(meta.get(name, "") for name in keep["source_labels"])
        return re.fullmatch(keep["regex"], value) is not None

    assert kept(pod_labels, "metrics")
    assert not kept(pod_labels, "http")  # the app port: /metrics answers 404 there
    assert not kept({**pod_labels, "app.kubernetes.io/name": "redis"}, "metrics")
    targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    assert {"namespace", "pod"} <= targets  # what the prometheus-adapter rule reads


def test_the_grafana_mount_matches_the_configmap_and_the_provider() -> None:
    spec = yaml.safe_load(example(PAGE, "grafana-dashboard-mount"))
    configmap = yaml.safe_load((BASE / "grafana-dashboard.yaml").read_text())
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/switchboard.yml").read_text())
    volumes = {v["name"]: v["configMap"]["name"] for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for c in spec["containers"] for m in c["volumeMounts"]}
    dashboard_mount = mounts[next(n for n, cm in volumes.items() if cm == configmap["metadata"]["name"])]
    (folder,) = [p["options"]["path"] for p in provider["providers"]]
    assert dashboard_mount.startswith(folder.rstrip("/") + "/")
    assert "switchboard.json" in configmap["data"]
    assert "/etc/grafana/provisioning/dashboards" in mounts.values()
