#!/usr/bin/env python3
"""A local Switchboard cluster without Docker: redis-server, N gunicorn instances, nginx.

    python scripts/cluster.py up [--instances 3] [--port 8080] [--dir .cluster] [--outbox]
    python scripts/cluster.py down [--dir .cluster]
    python scripts/cluster.py kill app1 [--signal KILL|TERM]   # a crash, or a drain
    python scripts/cluster.py restart app1                      # start it again, same port

Everything listens on 127.0.0.1. nginx runs the project's nginx.conf with only the upstream
``server appN:8000`` lines rewritten to the local instances (the compose hostnames do not resolve
here). ``down`` stops exactly the processes ``up`` recorded in DIR/state.json. With ``--outbox``
(``make cluster OUTBOX=1``), a private PostgreSQL with the outbox table too, and every instance
relays it (scripts/cluster_postgres.py; docs/outbox.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"cluster: {what} did not become ready at {url}")


UPSTREAM_SERVER = re.compile(r"^(?P<indent>\s*)server app\d+:\d+(?P<options> [^;]*)?;$")


def rewrite_nginx(conf: str, backends: list[int], listen: int) -> str:
    """The same config with the upstream servers (and listen port) pointed at loopback."""
    out: list[str] = []
    replaced = False
    for line in conf.splitlines():
        match = UPSTREAM_SERVER.match(line)
        if match is None:
            out.append(line)
        elif not replaced:
            options = match["options"] or ""
            out += [f"{match['indent']}server 127.0.0.1:{port}{options};" for port in backends]
            replaced = True
    if not replaced:
        raise SystemExit("cluster: nginx.conf has no 'server appN:PORT' upstream lines")
    text = "\n".join(out) + "\n"
    return re.sub(r"^(\s*)listen \d+;", rf"\g<1>listen 127.0.0.1:{listen};", text, count=1, flags=re.MULTILINE)


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    with log.open("ab") as out:
        # A session of its own: the cluster outlives `make`, and signals reach only what we aim at.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def spawn_app(state_dir: Path, i: int, port: int, redis_port: int, outbox_url: str | None = None) -> int:
    env = {
        **os.environ,
        "SWITCHBOARD_HOST": "127.0.0.1",
        "SWITCHBOARD_PORT": str(port),
        "SWITCHBOARD_INSTANCE_ID": f"app{i}",
        "SWITCHBOARD_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SWITCHBOARD_JWT_SECRET": (state_dir / "secret").read_text(),
        "SWITCHBOARD_API_KEYS": (state_dir / "api-key").read_text(),
        "SWITCHBOARD_DEV_MODE": os.environ.get("SWITCHBOARD_DEV_MODE", "true"),
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "1"),
        "PROMETHEUS_MULTIPROC_DIR": str(state_dir / "metrics" / f"app{i}"),
    }
    if outbox_url:
        env["SWITCHBOARD_OUTBOX_URL"] = outbox_url
    shutil.rmtree(env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)  # a restart starts counting anew
    return spawn([str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py"], state_dir / "logs" / f"app{i}.log", env)


def load_state(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    state_file = Path(args.dir).resolve() / "state.json"
    if not state_file.exists():
        raise SystemExit("cluster: nothing running (make cluster)")
    return state_file, json.loads(state_file.read_text())


def kill(args: argparse.Namespace) -> None:
    """Signal one instance's process group: KILL is a crash, TERM a drain; waits until it is gone."""
    _, state = load_state(args)
    pid = state["pids"][args.name]
    os.killpg(pid, getattr(signal, f"SIG{args.signal}"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            print(f"{args.name} gone (SIG{args.signal})", flush=True)
            return
        time.sleep(0.05)
    raise SystemExit(f"cluster: {args.name} still running 60 s after SIG{args.signal}")


def restart(args: argparse.Namespace) -> None:
    """Start a stopped instance again on its port, and wait until it is ready."""
    state_file, state = load_state(args)
    i = int(args.name.removeprefix("app"))
    port = state["backends"][i - 1]
    state["pids"][args.name] = spawn_app(Path(state["dir"]), i, port, state["redis_port"], state.get("outbox_url"))
    state_file.write_text(json.dumps(state, indent=2))
    wait_http(f"http://127.0.0.1:{port}/readyz", 30, args.name)
    print(f"{args.name} ready on 127.0.0.1:{port}", flush=True)


def up(args: argparse.Namespace) -> None:
    state_dir = Path(args.dir).resolve()
    if (state_dir / "state.json").exists():
        raise SystemExit(f"cluster: already running (see {state_dir}/state.json); run `make cluster-down` first")
    shutil.rmtree(state_dir, ignore_errors=True)
    (state_dir / "logs").mkdir(parents=True)
    pids: dict[str, int] = {}
    state: dict[str, object] = {"pids": pids, "dir": str(state_dir)}

    def save() -> None:
        (state_dir / "state.json").write_text(json.dumps(state, indent=2))

    redis_port = free_port()
    print(f"[1/3] redis-server on 127.0.0.1:{redis_port}", flush=True)
    pids["redis"] = spawn(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(state_dir),
        ],
        state_dir / "logs" / "redis.log",
    )
    save()
    # One secret for every instance, so a token minted by any of them works on all. Written
    # first, mode 0600: `restart` reads them back (state.json holds no secret).
    for name, value in (("secret", secrets.token_urlsafe(48)), ("api-key", secrets.token_urlsafe(32))):
        fd = os.open(state_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as secret_file:
            secret_file.write(value)
    outbox_url = None
    if args.outbox:
        sys.path.insert(0, str(ROOT))  # run as a script: make the repository's packages importable
        from scripts import cluster_postgres

        pids["postgres"], pg_dir, outbox_url = cluster_postgres.start(state_dir, free_port())
        state.update({"postgres_dir": str(pg_dir), "outbox_url": outbox_url})  # trust auth on loopback: no secret
        save()
        print(f"      postgresql with the outbox table: {outbox_url}", flush=True)
    backends: list[int] = []
    state.update({"backends": backends, "redis_port": redis_port})
    print(f"[2/3] {args.instances} app instances (gunicorn, dev mode)", flush=True)
    for i in range(1, args.instances + 1):
        port = free_port()
        pids[f"app{i}"] = spawn_app(state_dir, i, port, redis_port, outbox_url)
        backends.append(port)
        save()
    for i, port in enumerate(backends, start=1):
        wait_http(f"http://127.0.0.1:{port}/readyz", 30, f"app{i}")
        print(f"      app{i} ready on 127.0.0.1:{port}", flush=True)

    conf = state_dir / "nginx.conf"
    conf.write_text(rewrite_nginx((ROOT / "nginx.conf").read_text(), backends, args.port))
    print(f"[3/3] nginx on 127.0.0.1:{args.port}", flush=True)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    pids["nginx"] = spawn(
        [nginx, "-c", str(conf), "-g", f"pid {state_dir}/nginx.pid; daemon off;"], state_dir / "logs" / "nginx.log"
    )
    state.update({"url": f"http://127.0.0.1:{args.port}/"})
    save()
    wait_http(f"http://127.0.0.1:{args.port}/healthz", 15, "nginx")
    print(f"\ncluster up: {state['url']}  (logs in {state_dir}/logs, stop with `make cluster-down`)")
    print(f"server API key: in {state_dir}/api-key")


def down(args: argparse.Namespace) -> None:
    state_file = Path(args.dir).resolve() / "state.json"
    if not state_file.exists():
        print("cluster: nothing running")
        return
    state = json.loads(state_file.read_text())
    pids: dict[str, int] = state["pids"]
    # nginx first (no new clients), then the apps (they drain), then postgres and redis.
    order = sorted(pids, key=lambda name: (name != "nginx", name in ("postgres", "redis"), name))
    for name in order:
        try:
            os.killpg(pids[name], signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pids[name], 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(pids[name], signal.SIGKILL)
        print(f"stopped {name} (pid {pids[name]})", flush=True)
    if "postgres_dir" in state:
        shutil.rmtree(state["postgres_dir"], ignore_errors=True)
    state_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "kill", "restart"])
    parser.add_argument("name", nargs="?", help="an instance (app1...), for kill and restart")
    parser.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    parser.add_argument("--instances", type=int, default=int(os.environ.get("INSTANCES", "3")))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLUSTER_PORT", "8080")))
    parser.add_argument("--dir", default=os.environ.get("CLUSTER_DIR", str(ROOT / ".cluster")))
    parser.add_argument("--outbox", action="store_true", default=os.environ.get("OUTBOX", "") not in ("", "0"))
    args = parser.parse_args()
    if args.command == "up":
        try:
            up(args)
        except BaseException:
            down(args)  # never leave half a cluster behind
            raise
    elif args.command == "down":
        down(args)
    elif args.name is None:
        raise SystemExit(f"cluster: {args.command} needs an instance name (app1...)")
    else:
        {"kill": kill, "restart": restart}[args.command](args)


if __name__ == "__main__":
    main()
