"""The environment and command each deployment hands the image, rebuilt from its files.

* ``pod(docs)``: what a kubelet gives the Deployment's container: the image's ENV, then the
  container's ``envFrom`` (ConfigMaps, and Secrets, whose keys get placeholder values when the
  Secret is created out of band), then its ``env``, plus the Docker-link variables of every Service
  in the namespace (and the API server's ``KUBERNETES_*``) for names not already set, unless the pod
  spec turns service links off.
* ``compose_service(name)``: what ``docker compose`` gives an app service: the image's ENV, then
  ``env_file`` (.env as ``make up`` creates it), then ``environment`` with ``${VAR:-default}``
  interpolated from .env.

Paths a volume provides (``/etc/switchboard``, ``/tmp``) are mapped to directories of the test's, as
the only difference from a real container; ``Launch.command`` is the container's command, or the
image's CMD.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

from tests.support import ROOT

POD_NAME = "switchboard-7c9d8b6f5-x2x7q"
FIELDS = {"metadata.name": POD_NAME, "metadata.namespace": "switchboard", "status.podIP": "10.244.1.17"}
# The API server's Service, in every pod whatever enableServiceLinks says.
KUBERNETES = {"name": "kubernetes", "ip": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}


@dataclass
class Launch:
    command: list[str]
    env: dict[str, str]
    # container path -> directory standing in for it
    mounts: dict[str, Path] = field(default_factory=dict)

    def local(self, value: str) -> str:
        for target, source in sorted(self.mounts.items(), key=lambda item: -len(item[0])):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(source) + value[len(target.rstrip("/")) :]
        return value

    def process_env(self, venv_bin: Path) -> dict[str, str]:
        """The env with mounted paths mapped, and the image's /opt/venv/bin as this virtualenv."""
        env = {name: self.local(value) for name, value in self.env.items()}
        env["PATH"] = env.get("PATH", "").replace("/opt/venv/bin", str(venv_bin)) + ":/usr/bin:/bin"
        return env


def image() -> tuple[dict[str, str], list[str]]:
    df = DockerfileParser(path=str(ROOT / "Dockerfile"))
    command: list[str] = yaml.safe_load(df.cmd)
    return dict(df.envs), command


def service_links(service: dict[str, Any]) -> dict[str, str]:
    """Docker-link variables, as the kubelet writes them for one Service (pkg/kubelet/envvars)."""
    prefix = service["name"].upper().replace("-", "_")
    ip = service["ip"]
    ports = service["ports"]
    env = {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(ports[0]["port"])}
    for port in ports:
        if port.get("name"):
            env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
    first = ports[0]
    env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
    for port in ports:
        proto = port.get("protocol", "TCP")
        base = f"{prefix}_PORT_{port['port']}_{proto}"
        env[base] = f"{proto.lower()}://{ip}:{port['port']}"
        env[f"{base}_PROTO"] = proto.lower()
        env[f"{base}_PORT"] = str(port["port"])
        env[f"{base}_ADDR"] = ip
    return env


def _placeholder_secret(name: str) -> dict[str, str]:
    """The keys docs and secret.example.yaml tell operators to create, each a fresh strong value."""
    example = yaml.safe_load((ROOT / "k8s" / "base" / "secret.example.yaml").read_text())
    assert example["metadata"]["name"] == name, f"the Secret {name} is documented nowhere"
    return {key: secrets.token_urlsafe(32) for key in example["stringData"]}


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def pod(docs: list[dict[str, Any]], workdir: Path, *, links: bool | None = None) -> Launch:
    """The switchboard container of the rendered overlay ``docs``; ``links`` overrides the pod
    spec's enableServiceLinks (None: as the spec says)."""
    deployment = _named(docs, "Deployment", "switchboard")
    assert deployment is not None
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    image_env, cmd = image()
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = _named(docs, "ConfigMap", source["configMapRef"]["name"])
            assert config is not None or source["configMapRef"].get("optional")
            env.update((config or {}).get("data", {}))
        else:
            name = source["secretRef"]["name"]
            secret = _named(docs, "Secret", name)
            env.update(secret.get("stringData", {}) if secret else _placeholder_secret(name))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
    services = [
        {"name": d["metadata"]["name"], "ip": f"10.96.0.{n}", "ports": d["spec"]["ports"]}
        for n, d in enumerate((d for d in docs if d["kind"] == "Service"), start=10)
    ]
    linked = spec.get("enableServiceLinks", True) if links is None else links
    for service in [KUBERNETES, *(services if linked else [])]:
        for name, value in service_links(service).items():
            env.setdefault(name, value)  # never over the container's own variables
    env["HOSTNAME"] = POD_NAME
    mounts = {}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        local = workdir / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        config_name = volumes[mount["name"]].get("configMap", {}).get("name")
        if config_name:
            config = _named(docs, "ConfigMap", config_name)
            assert config is not None, f"volume {mount['name']} names a missing ConfigMap"
            for file, text in config["data"].items():
                (local / file).write_text(text)
        mounts[mount["mountPath"]] = local
    command = container.get("command", cmd) + container.get("args", [])
    return Launch(command, {**image_env, **env}, mounts)


def _interpolate(value: str, dotenv: dict[str, str]) -> str:
    def one(found: re.Match[str]) -> str:
        name, default = found.group(1), found.group(3)
        return dotenv.get(name) or (default or "") if found.group(2) == ":-" else dotenv.get(name, "")

    result = re.sub(r"\$\{(\w+)(?:(:-)([^}]*))?\}", one, value)
    assert "$" not in result.replace("$$", ""), f"compose interpolation this test does not know: {value}"
    return result.replace("$$", "$")


def compose_service(name: str, workdir: Path) -> Launch:
    """An app service of docker-compose.yml, with .env made as `make up` makes it."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / ".env.example").write_text((ROOT / ".env.example").read_text())
    subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), ".env"], cwd=workdir, check=True, timeout=30)
    dotenv = {}
    for line in (workdir / ".env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            dotenv[key] = value
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]
    assert spec["env_file"] == ".env"
    environment = {key: _interpolate(str(value), dotenv) for key, value in spec["environment"].items()}
    image_env, cmd = image()
    mounts = {}
    for volume in spec.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = ROOT / source
    for target in spec.get("tmpfs", []):
        mounts[target] = workdir / "tmpfs" / target.strip("/")
        mounts[target].mkdir(parents=True, exist_ok=True)
    env = {**image_env, **dotenv, **environment, "HOSTNAME": name}
    return Launch(spec.get("command", cmd), env, mounts)
