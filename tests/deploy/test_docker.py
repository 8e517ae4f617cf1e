"""Dockerfile and compose, checked with real tools. The image itself cannot be built here (no engine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from dockerfile_parse import DockerfileParser

from tests.support import ROOT, TEST_SECRET, free_port, wait_until

BIN = Path(sys.executable).parent
APP_SERVICES = ["app1", "app2", "app3"]


def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def nginx_conf() -> str:
    return (ROOT / "nginx.conf").read_text()


def test_hadolint_is_clean() -> None:
    result = subprocess.run([BIN / "hadolint", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_copy_source_exists_and_is_not_ignored() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for instruction in dockerfile().structure:
        if instruction["instruction"] != "COPY" or "--from=" in instruction["value"]:
            continue
        *sources, _ = instruction["value"].split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"
            assert f"!{source.rstrip('/')}/" in ignored or f"!{source}" in ignored, (
                f"{source} is excluded by .dockerignore"
            )


def test_cmd_runs_and_the_healthcheck_passes(tmp_path: Path) -> None:
    """Lay out the files as the final stage does, run the exact CMD on loopback, poll the HEALTHCHECK."""
    df = dockerfile()
    final = df.structure[max(i for i, ins in enumerate(df.structure) if ins["instruction"] == "FROM") :]
    workdir = tmp_path / "image"
    workdir.mkdir()
    for ins in final:
        if ins["instruction"] == "COPY" and "--from=" not in ins["value"]:
            *sources, dest = ins["value"].split()
            for source in sources:
                target = workdir / dest / Path(source).name if dest.endswith("/") else workdir / dest
                copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
                copy(ROOT / source, target)
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_"))}
    env.update(df.envs)
    env.update(
        {
            "PATH": f"{BIN}:{env['PATH']}",  # the image's /opt/venv is this test's virtualenv
            "SWITCHBOARD_HOST": "127.0.0.1",
            "SWITCHBOARD_PORT": port,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
            "SWITCHBOARD_JWT_SECRET": TEST_SECRET,  # compose supplies it from .env
        }
    )
    assert df.cmd.startswith("["), "CMD must be JSON (exec) form so signals reach gunicorn"
    cmd = yaml.safe_load(df.cmd)
    healthcheck = next(ins["value"] for ins in final if ins["instruction"] == "HEALTHCHECK")
    probe = yaml.safe_load(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    probe = [part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in probe]
    assert "8000" in df.envs["SWITCHBOARD_PORT"]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: subprocess.run(probe, cwd=workdir, env=env, capture_output=True, timeout=5).returncode == 0,
            30,
            "the HEALTHCHECK to pass",
        )
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ready"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert b"Using worker: app.server.Worker" in out


def test_compose_matches_the_compose_spec() -> None:
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_cross_references() -> None:
    spec = compose()
    services = spec["services"]
    assert sorted(name for name in services if name.startswith("app")) == APP_SERVICES
    # The three app services are identical but for their instance id.
    envs = [dict(services[name]["environment"]) for name in APP_SERVICES]
    assert [e.pop("SWITCHBOARD_INSTANCE_ID") for e in envs] == APP_SERVICES
    assert envs[0] == envs[1] == envs[2]
    assert services["app1"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in services["redis"]
    # Bind-mount sources exist.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    # nginx's upstream names the app services on the port they serve.
    upstream = re.findall(r"^\s*server (\S+):(\d+)", nginx_conf(), re.MULTILINE)
    app_port = dockerfile().envs["SWITCHBOARD_PORT"]
    assert upstream == [(name, app_port) for name in APP_SERVICES]
    assert services["app1"]["expose"] == [app_port]
    assert f"EXPOSE {app_port}" in (ROOT / "Dockerfile").read_text()
    # nginx listens where compose publishes it.
    listen = re.search(r"^\s*listen (\d+);", nginx_conf(), re.MULTILINE)
    assert listen is not None
    assert services["nginx"]["ports"] == [f"{listen.group(1)}:{listen.group(1)}"]
    # Prometheus scrapes every app service.
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"{name}:{app_port}" for name in APP_SERVICES]
    # Secrets come from .env, whose committed example names every variable compose interpolates.
    example = (ROOT / ".env.example").read_text()
    for variable in set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text())):
        assert f"{variable}=" in example
    assert "SWITCHBOARD_JWT_SECRET=\n" in example  # no real value committed
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_nginx_conf_has_no_pid_and_logs_no_query_strings() -> None:
    conf = nginx_conf()
    assert not re.search(r"^\s*pid\b", conf, re.MULTILINE)
    log_format = re.search(r"log_format switchboard(.*?);", conf, re.DOTALL)
    assert log_format is not None
    for variable in ("$request ", "$args", "$request_uri", "$query_string"):
        assert variable not in log_format.group(1)
