"""Server API timings: presence on a 10,000-member channel, and disconnect across three instances.

    make bench-api                         # about a minute
    .venv/bin/python -m bench.server_api --members 2000 --users 20

1. 10,000 real ``/ws`` sockets subscribe to one channel on one instance (two load processes);
   then ``presence`` is read whole, page by page (1000 a page), and ``presence_stats`` once,
   several times each: wall time per full listing.
2. A user holds one connection on each of three instances; ``disconnect`` is called on one of
   them, and the time until every connection has received its close frame is measured, for many
   users: p50 and p99.

Results go between the server-api markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from websockets.asyncio.client import connect

from app.auth import mint_token
from app.config import Settings
from bench.run import BIN, ROOT, SECRET, free_port, spawn_loaders, start_redis, wait_port
from bench.sections import replace_section

API_KEY = "bench-api-key-0123456789-abcdefghijklmnopqrstuvwxyz"
START, END = "<!-- server-api:start -->", "<!-- server-api:end -->"


def start_app(port: int, redis_url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_"))}
    env.update(
        SWITCHBOARD_JWT_SECRET=SECRET,
        SWITCHBOARD_API_KEYS=API_KEY,
        SWITCHBOARD_BROKER_URL=redis_url,
        SWITCHBOARD_LOG_LEVEL="warning",
        SWITCHBOARD_INSTANCE_ID=f"bench-{port}",
        SWITCHBOARD_RATE_LIMIT_PER_SECOND="100000",
        SWITCHBOARD_RATE_LIMIT_BURST="100000",
        # Admission control (1000 handshakes/s by default) would refuse most of the 10,000 connects.
        SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND="1000000",
    )
    log = (workdir / f"api-{port}.log").open("wb")
    cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


async def presence_timing(port: int, members: int, reps: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "targets": [["127.0.0.1", port]],
        "channels": ["crowd"],
        "flavor": "ws",
        "phases": [],
        "channel_of": [0] * members,
        "target_of": [0] * members,
    }
    loaders = await spawn_loaders(spec, 2)
    try:
        for loader in loaders:
            assert loader.stdout is not None
            ready = json.loads(await asyncio.wait_for(loader.stdout.readline(), 300))
            print(f"      {ready['connected']} sockets subscribed", flush=True)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": API_KEY}) as http:
            listings, pages, largest = [], 0, 0
            for _ in range(reps):
                started, cursor, seen = time.perf_counter(), None, 0
                while True:
                    body = {"channel": "crowd", **({"cursor": cursor} if cursor else {})}
                    response = await http.post("/api/v1/presence", json=body, timeout=30)
                    largest = max(largest, len(response.content))
                    page = response.json()
                    seen += len(page["clients"])
                    pages += 1
                    cursor = page["cursor"]
                    if cursor is None:
                        break
                listings.append(time.perf_counter() - started)
            started = time.perf_counter()
            stats = (await http.post("/api/v1/presence_stats", json={"channel": "crowd"}, timeout=30)).json()
            stats_seconds = time.perf_counter() - started
        return {
            "runs": reps,
            "members": stats["clients"],
            "listed": seen,
            "pages_per_listing": pages // reps,
            "largest_reply_bytes": largest,
            "listing_seconds_median": statistics.median(listings),
            "listing_seconds_max": max(listings),
            "stats_seconds": stats_seconds,
        }
    finally:
        for loader in loaders:
            loader.kill()
            await loader.wait()


async def settled(port: int, deadline: float = 120) -> None:
    """Until the presence phase's sockets are all gone: their clean-up would skew the timings."""
    async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}) as http:
        stop = time.monotonic() + deadline
        while time.monotonic() < stop:
            info = (await http.post(f"http://127.0.0.1:{port}/api/v1/info", json={})).json()
            if sum(i["connections"] for i in info["instances"]) == 0:
                return
            await asyncio.sleep(0.5)
    raise RuntimeError("the presence phase's sockets never closed")


async def disconnect_timing(ports: list[int], users: int) -> dict[str, Any]:
    settings = Settings(jwt_secret=SECRET)
    latencies = []
    await settled(ports[0])
    async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}) as http:
        # One unmeasured round per instance first: each process's first API call pays its
        # one-off costs (validators built, connections opened), about 150 ms here.
        for n in range(-3, users):
            token = mint_token(settings, f"user-{n}", None, 600)
            sockets = [await connect(f"ws://127.0.0.1:{port}/ws") for port in ports]
            for ws in sockets:
                await ws.send(orjson.dumps({"id": 1, "op": "connect", "token": token}).decode())
                assert orjson.loads(await ws.recv())["ok"]
            started = time.perf_counter()
            await http.post(f"http://127.0.0.1:{ports[n % 3]}/api/v1/disconnect", json={"user": f"user-{n}"})
            await asyncio.gather(*(ws.wait_closed() for ws in sockets))
            if n >= 0:
                latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "users": users,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
    }


def write(presence: dict[str, Any], disconnect: dict[str, Any], command: str) -> None:
    target = ROOT / "docs" / "benchmarks.md"
    lines = [
        START,
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on this machine "
        f"({os.cpu_count()} cores).",
        "",
        "| measurement | result |",
        "| --- | --- |",
        f"| `presence` of a {presence['members']:,}-member channel, read whole ({presence['pages_per_listing']} "
        f"pages of at most 1000; median / worst of {presence['runs']} runs) | "
        f"{presence['listing_seconds_median']:.3f} s / {presence['listing_seconds_max']:.3f} s |",
        f"| largest `presence` reply | {presence['largest_reply_bytes'] / 1024:.0f} KB |",
        f"| `presence_stats` of the same channel | {presence['stats_seconds']:.3f} s |",
        f"| `disconnect` reaching a user's 3 connections on 3 instances ({disconnect['users']} users, after one "
        f"warm-up call per instance): "
        f"p50 / p99 / max | {disconnect['p50_ms']:.1f} / {disconnect['p99_ms']:.1f} / {disconnect['max_ms']:.1f} ms |",
        END,
    ]
    replace_section(target, START, END, lines, heading="Server API")


async def main(args: argparse.Namespace) -> None:
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    redis, redis_url = await start_redis(workdir)
    ports = [free_port() for _ in range(3)]
    apps = [start_app(port, redis_url, workdir) for port in ports]
    try:
        for port in ports:
            await wait_port(port)
        print(f"[1/2] presence: {args.members:,} sockets in one channel", flush=True)
        presence = await presence_timing(ports[0], args.members, args.reps)
        print(f"      {json.dumps(presence)}", flush=True)
        print(f"[2/2] disconnect: {args.users} users, one connection on each of 3 instances", flush=True)
        disconnect = await disconnect_timing(ports, args.users)
        print(f"      {json.dumps(disconnect)}", flush=True)
    finally:
        for proc in [*apps, redis]:
            proc.terminate()
            proc.wait(10)
    command = "make bench-api" if len(sys.argv) == 1 else "python -m bench.server_api " + " ".join(sys.argv[1:])
    write(presence, disconnect, command)
    print("done: docs/benchmarks.md (server API)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    uvloop.run(main(parser.parse_args()))
