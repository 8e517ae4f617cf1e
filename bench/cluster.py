"""One Redis against a 3-shard Redis Cluster, measured the same way in one run.

    make bench-cluster                      # about 2 minutes
    .venv/bin/python -m bench.cluster --messages 20000

Two measurements per topology, each against private redis-server processes:
  publish   the broker alone (one process, history on), publishing over 100 channels with 100 in
            flight: redis-server CPU per 1,000 publishes, per shard and in all.
  e2e       two app instances, 1000 subscribers (10 per channel on 100 channels, half on each
            instance), 100 publishing sockets: deliveries per second, and deliveries per app
            CPU-second (does sharding cost the instances anything?).
Two cores cannot show linear scaling in wall time; what they can show is that each shard carries
about a third of the Redis work, and that fan-out per server CPU-second does not drop.
Results: docs/benchmarks.md (between the cluster markers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from app.broker import create_broker
from app.broker.base import HistoryOptions
from app.protocol import header
from bench.run import BIN, ROOT, SECRET, cpu_seconds, free_port, start_redis, wait_port
from bench.sections import replace_section
from bench.wsclient import Client, connect

START, END = "<!-- cluster:start -->", "<!-- cluster:end -->"
CHANNELS = 100


async def start_cluster(workdir: Path) -> tuple[list[subprocess.Popen[bytes]], str]:
    """Three primaries, no replicas; returns the processes and a redis+cluster:// URL."""
    procs, ports = [], [free_port() for _ in range(3)]
    for port in ports:
        node = workdir / f"node-{port}"
        node.mkdir()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(node)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", str(node / "nodes.conf")]
        args += ["--cluster-port", str(free_port())]
        procs.append(
            subprocess.Popen([shutil.which("redis-server") or "redis-server", *args], stdout=subprocess.DEVNULL)
        )
    for port in ports:
        await wait_port(port)
    create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"]
    await asyncio.to_thread(subprocess.run, create, check=True, capture_output=True, timeout=30)
    info = ["redis-cli", "-p", str(ports[0]), "cluster", "info"]
    deadline = time.monotonic() + 30
    while b"cluster_state:ok" not in (await asyncio.to_thread(subprocess.run, info, capture_output=True)).stdout:
        assert time.monotonic() < deadline, "cluster never reached cluster_state:ok"
        await asyncio.sleep(0.1)
    return procs, "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)


async def publish_round(url: str, redis_pids: list[int], messages: int) -> dict[str, Any]:
    broker = create_broker(url, history=HistoryOptions(size=1000))
    await broker.start(lambda channel, data: None, tuple, lambda: None)
    frame = orjson.dumps({"content": {"pad": "x" * 60}})
    before = [cpu_seconds([pid]) for pid in redis_pids]
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(100)

    async def one(n: int) -> None:
        async with semaphore:
            await broker.publish(f"bench-{n % CHANNELS}", header(), frame)

    await asyncio.gather(*(one(n) for n in range(messages)))
    elapsed = time.perf_counter() - started
    per_shard = [(cpu_seconds([pid]) - b) * 1e6 / messages for pid, b in zip(redis_pids, before, strict=True)]
    await broker.close()
    return {"per_shard_us": per_shard, "total_us": sum(per_shard), "rate": messages / elapsed}


def start_app(port: int, url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_JWT_SECRET=SECRET, SWITCHBOARD_BROKER_URL=url, SWITCHBOARD_LOG_LEVEL="warning")
    env.update(SWITCHBOARD_RATE_LIMIT_PER_SECOND="1000000", SWITCHBOARD_RATE_LIMIT_BURST="1000000")
    env.update(SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND="100000", SWITCHBOARD_INSTANCE_ID=f"bench-{port}")
    cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / f"app-{port}.log").open("wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


async def e2e_round(url: str, redis_pids: list[int], workdir: Path, per_channel: int) -> dict[str, Any]:
    ports = [free_port(), free_port()]
    apps = [start_app(port, url, workdir) for port in ports]
    received = [0]

    def on_payload(seq: int, sent_at: float) -> None:
        received[0] += 1

    try:
        for port in ports:
            await wait_port(port)
        await asyncio.sleep(1.0)  # readiness: the instances' brokers connect in the background
        subs: list[Client] = []
        for i in range(CHANNELS * 10):
            subs.append(await connect("127.0.0.1", ports[i % 2], f"bench-{i % CHANNELS}", "plain", on_payload))
        pubs = [
            await connect("127.0.0.1", ports[i % 2], f"bench-{i}", "plain", lambda s, t: None) for i in range(CHANNELS)
        ]
        await asyncio.sleep(1.0)  # every join confirmed before the clock starts
        expected = CHANNELS * per_channel * 10
        app_cpu = cpu_seconds([a.pid for a in apps])
        redis_cpu = [cpu_seconds([pid]) for pid in redis_pids]
        started = time.perf_counter()
        for n in range(per_channel):
            for pub in pubs:
                pub.publish("", {"s": n, "t": time.time()})
            if n % 10 == 9:
                await asyncio.sleep(0)  # let the sockets drain
        deadline = time.monotonic() + 120
        while received[0] < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - counting frames
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        app_cpu = cpu_seconds([a.pid for a in apps]) - app_cpu
        redis = [cpu_seconds([pid]) - before for pid, before in zip(redis_pids, redis_cpu, strict=True)]
        for client in (*subs, *pubs):
            client.close()
        return {
            "delivered": received[0],
            "expected": expected,
            "per_second": received[0] / elapsed,
            "per_app_cpu_s": received[0] / max(app_cpu, 1e-6),
            "redis_cpu_s": redis,
        }
    finally:
        for app in apps:
            app.terminate()
            app.wait(15)


async def topology(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    work = workdir / name
    work.mkdir()
    if name == "one Redis":
        proc, url = await start_redis(work)
        procs = [proc]
    else:
        procs, url = await start_cluster(work)
    try:
        pids = [p.pid for p in procs]
        print(f"[{name}] publish ...", flush=True)
        publish = await publish_round(url, pids, args.messages)
        print(f"[{name}] end to end ...", flush=True)
        e2e = await e2e_round(url, pids, work, args.per_channel)
        return {"publish": publish, "e2e": e2e}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def write(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    info = f"{time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, Python {platform.python_version()}"
    one, cluster = results["one Redis"], results["3-shard cluster"]
    # Microseconds per publish are milliseconds per 1,000 publishes.
    shards = ", ".join(f"{us:.1f}" for us in cluster["publish"]["per_shard_us"])
    lines = [
        START,
        f"Produced by `{' '.join(['python -m bench.cluster', *sys.argv[1:]])}` on {info}.",
        "",
        "| | one Redis | 3-shard cluster | cluster / one |",
        "| --- | --- | --- | --- |",
        f"| Redis CPU per 1,000 publishes (history on, {CHANNELS} channels), all shards | "
        f"{one['publish']['total_us']:.1f} ms | {cluster['publish']['total_us']:.1f} ms | "
        f"{cluster['publish']['total_us'] / one['publish']['total_us']:.2f}x |",
        f"| ... per shard | {one['publish']['total_us']:.1f} ms | {shards} ms | |",
        f"| publishes per second (one process, 100 in flight) | {one['publish']['rate']:,.0f} | "
        f"{cluster['publish']['rate']:,.0f} | {cluster['publish']['rate'] / one['publish']['rate']:.2f}x |",
        f"| end to end: deliveries per second ({CHANNELS} channels x 10 subscribers, 2 instances) | "
        f"{one['e2e']['per_second']:,.0f} | {cluster['e2e']['per_second']:,.0f} | "
        f"{cluster['e2e']['per_second'] / one['e2e']['per_second']:.2f}x |",
        f"| end to end: deliveries per app CPU-second | {one['e2e']['per_app_cpu_s']:,.0f} | "
        f"{cluster['e2e']['per_app_cpu_s']:,.0f} | "
        f"{cluster['e2e']['per_app_cpu_s'] / one['e2e']['per_app_cpu_s']:.2f}x |",
        f"| end to end: delivered / expected | {one['e2e']['delivered']:,} / {one['e2e']['expected']:,} | "
        f"{cluster['e2e']['delivered']:,} / {cluster['e2e']['expected']:,} | |",
        END,
    ]
    replace_section(ROOT / "docs" / "benchmarks.md", START, END, lines, heading="One Redis or a Redis Cluster")


async def main(args: argparse.Namespace) -> None:
    results = {}
    with tempfile.TemporaryDirectory(prefix="sb-cluster-") as tmp:
        for name in ("one Redis", "3-shard cluster"):
            results[name] = await topology(name, Path(tmp), args)
            print(f"[{name}] {results[name]}", flush=True)
    write(results, args)
    print("written: docs/benchmarks.md")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000, help="publishes in the broker-only round")
    parser.add_argument("--per-channel", type=int, default=100, help="messages per channel end to end")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
