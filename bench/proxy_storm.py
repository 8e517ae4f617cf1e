"""A reconnect storm through the connect proxy: what it costs the backend.

    make bench-api                                      # after the server API timings
    .venv/bin/python -m bench.proxy_storm --clients 1000 --rounds 3

``--clients`` sockets with a session cookie and no token connect to ``/ws`` at once, so that every
``connect`` asks the backend (bench/servers/proxy_backend.py, a FastAPI app under uvicorn that
takes ``--lookup-ms`` per session lookup). Then all of them drop and reconnect at once, ``--rounds``
times. Clients back off as the shipped ones do: a handshake refused with HTTP 503
(``SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND``) or a ``connect`` refused (112, backend unavailable) is
retried after a jittered, doubling delay. Measured per round, on the backend's side: calls per
successful connect (1.00 means no retry storm), the most calls one session caused, the most calls in
flight (bounded by ``SWITCHBOARD_PROXY_MAX_CONCURRENCY``), and the time until every client is in.

Results go between the proxy-storm markers in docs/proxies.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from bench.run import BIN, ROOT, SECRET, free_port, wait_port
from bench.sections import replace_section

START, END = "<!-- proxy-storm:start -->", "<!-- proxy-storm:end -->"
CONNECT = orjson.dumps({"id": 1, "op": "connect"}).decode()


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def one_client(port: int, session: int, refused: dict[str, int]) -> ClientConnection:
    delay = 0.25
    while True:
        try:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws",
                additional_headers={"Cookie": f"session={session}"},
                open_timeout=30,
                max_queue=4,
            )
        except InvalidStatus:
            refused["handshake"] += 1
        else:
            await ws.send(CONNECT)
            if orjson.loads(await ws.recv())["ok"]:
                return ws
            refused["connect"] += 1
            await ws.close()
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 5.0)


async def storm(port: int, backend: str, clients: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=backend) as http:
        await http.post("/reset")
        refused = {"handshake": 0, "connect": 0}
        started = time.perf_counter()
        sockets = await asyncio.gather(*(one_client(port, n, refused) for n in range(clients)))
        elapsed = time.perf_counter() - started
        stats = (await http.get("/stats")).json()
    await asyncio.gather(*(ws.close() for ws in sockets))
    return {
        "seconds": elapsed,
        "calls": stats["calls"],
        "calls_per_connect": stats["calls"] / clients,
        "most_per_session": stats["most_per_session"],
        "max_inflight": stats["max_inflight"],
        "refused_handshakes": refused["handshake"],
        "refused_connects": refused["connect"],
    }


def write(rounds: list[dict[str, Any]], args: argparse.Namespace, command: str) -> None:
    target = ROOT / "docs" / "proxies.md"
    worst = max(rounds, key=lambda r: r["calls_per_connect"])
    lines = [
        START,
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on this machine "
        f"({os.cpu_count()} cores): {args.clients:,} clients connect at once through the connect proxy, "
        f"{args.rounds} times, to one instance with `SWITCHBOARD_PROXY_MAX_CONCURRENCY={args.concurrency}`; "
        f"the backend takes {args.lookup_ms} ms per session lookup.",
        "",
        "| measurement | result |",
        "| --- | --- |",
        f"| backend calls per connect (worst round) | {worst['calls_per_connect']:.2f} ({worst['calls']:,} calls) |",
        f"| most calls for one session in a round | {max(r['most_per_session'] for r in rounds)} |",
        f"| most calls in flight at the backend | {max(r['max_inflight'] for r in rounds)} |",
        f"| connects refused by the proxy and retried (all rounds) | {sum(r['refused_connects'] for r in rounds)} |",
        f"| handshakes refused with 503 and retried (all rounds) | {sum(r['refused_handshakes'] for r in rounds)} |",
        f"| time until every client is connected (median / worst) | "
        f"{statistics.median(r['seconds'] for r in rounds):.2f} s / {max(r['seconds'] for r in rounds):.2f} s |",
        END,
    ]
    replace_section(target, START, END, lines)


async def main(args: argparse.Namespace) -> None:
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    backend_port, app_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_"))}
    backend_cmd = [str(BIN / "python"), "-m", "uvicorn", "bench.servers.proxy_backend:app", "--no-access-log"]
    backend_cmd += ["--host", "127.0.0.1", "--port", str(backend_port), "--log-level", "warning"]
    backend_env = {**clean, "BENCH_LOOKUP_SECONDS": str(args.lookup_ms / 1000)}
    app_env = {
        **clean,
        "SWITCHBOARD_JWT_SECRET": SECRET,
        "SWITCHBOARD_LOG_LEVEL": "warning",
        "SWITCHBOARD_CONNECT_PROXY_URL": f"http://127.0.0.1:{backend_port}/connect",
        "SWITCHBOARD_PROXY_MAX_CONCURRENCY": str(args.concurrency),
    }
    app_cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(app_port)]
    procs = [start(backend_cmd, backend_env, workdir / "proxy-backend.log")]
    procs.append(start(app_cmd, app_env, workdir / "proxy-app.log"))
    rounds = []
    try:
        await wait_port(backend_port)
        await wait_port(app_port)
        for n in range(args.rounds):
            found = await storm(app_port, f"http://127.0.0.1:{backend_port}", args.clients)
            print(f"      round {n + 1}: {orjson.dumps(found).decode()}", flush=True)
            rounds.append(found)
            await asyncio.sleep(1.5)  # the handshake bucket refills, as between real storms
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    command = "make bench-api" if len(sys.argv) == 1 else "python -m bench.proxy_storm " + " ".join(sys.argv[1:])
    write(rounds, args, command)
    print("done: docs/proxies.md (connect proxy storm)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lookup-ms", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    uvloop.run(main(parser.parse_args()))
