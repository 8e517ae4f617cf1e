"""Delivery benchmark: what history and recovery cost, and how fast clients catch up after a crash.

    make bench-delivery                          # about 2 minutes on 2 cores
    .venv/bin/python -m bench.delivery --reps 1  # quicker

Three measurements, each against a private redis-server, in one run:
  publish   one process publishing ~100-byte frames through the Redis broker, history on (1000
            kept) and off, alternating rounds: sequential latency (one publish awaited at a time),
            batched throughput (100 in flight), and redis-server CPU per publish.
  memory    Redis memory used by history: 10,000 messages in one channel (history size 10,000),
            and 1000 channels of 10 messages each (per-channel overhead included).
  crash     two instances, 200 subscribers (the package's client, default backoff) on instance A,
            a publisher streaming 200 messages/s to B; A is SIGKILLed. Per subscriber: the time
            from the kill until its ``recovered`` frame (every missed message delivered before it).
Results: docs/delivery.md (between the result markers), docs/delivery-recovery.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import matplotlib
import orjson
import redis.asyncio as aioredis

from app.broker import HistoryOptions
from app.broker.redis import RedisBroker
from app.broker.scripts import history_keys
from app.protocol import header
from bench.run import BIN, ROOT, SECRET, cpu_seconds, free_port, start_redis, wait_port
from bench.sections import replace_section
from switchboard_client.realtime import SwitchboardClient

matplotlib.use("Agg")
import matplotlib.pyplot as plt

API_KEY = "bench-api-key-0123456789-abcdefghijklmnopqrstuvwxyz"
START, END = "<!-- results:start -->", "<!-- results:end -->"
DOCS = ROOT / "docs"


def frame(n: int) -> bytes:
    return orjson.dumps({"content": {"seq": n, "pad": "x" * 60}, "channel": "bench"})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def publish_round(url: str, size: int, n: int, redis_pid: int) -> dict[str, float]:
    broker = RedisBroker(url, name=f"bench-{size}", history=HistoryOptions(size=size))
    await broker.start(lambda channel, data: None, lambda: ("bench",), lambda: None)
    await broker.subscribe("bench")  # one subscriber, as in production: PUBLISH has someone to send to
    try:
        latencies = []
        for i in range(n):
            started = time.perf_counter()
            await broker.publish("bench", header(), frame(i))
            latencies.append(time.perf_counter() - started)
        cpu0, started = cpu_seconds([redis_pid]), time.perf_counter()
        for base in range(0, n * 20, 100):
            await asyncio.gather(*(broker.publish("bench", header(), frame(base + i)) for i in range(100)))
        elapsed, redis_cpu = time.perf_counter() - started, cpu_seconds([redis_pid]) - cpu0
    finally:
        await broker.close()
    return {
        "p50_us": pct(latencies, 0.5) * 1e6,
        "p99_us": pct(latencies, 0.99) * 1e6,
        "throughput": n * 20 / elapsed,
        "redis_cpu_us": redis_cpu / (n * 20) * 1e6,
    }


async def bench_publish(workdir: Path, reps: int) -> dict[str, dict[str, float]]:
    proc, url = await start_redis(workdir)
    try:
        rounds: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for rep in range(reps * 2):
            mode = "off" if rep % 2 == 0 else "on"  # alternate, so drift hits both alike
            rounds[mode].append(await publish_round(url, 0 if mode == "off" else 1000, 2000, proc.pid))
            print(f"  publish round {rep + 1}/{reps * 2} (history {mode}): {rounds[mode][-1]}", flush=True)
        return {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in rounds.items()}
    finally:
        proc.terminate()
        proc.wait(10)


async def bench_memory(workdir: Path) -> dict[str, float]:
    proc, url = await start_redis(workdir)
    client = aioredis.from_url(url)
    try:
        results = {}
        for label, channels, per_channel in (("one_channel", 1, 10_000), ("many_channels", 1000, 10)):
            await client.flushall()
            before = int((await client.info("memory"))["used_memory"])
            broker = RedisBroker(url, name="bench-mem", history=HistoryOptions(size=10_000))
            await broker.start(lambda channel, data: None, tuple, lambda: None)
            for n in range(per_channel):
                await asyncio.gather(*(broker.publish(f"c{c}", header(), frame(n)) for c in range(channels)))
            await broker.close()
            used = int((await client.info("memory"))["used_memory"]) - before
            stream = await client.memory_usage(history_keys("c0")[1]) or 0
            results[label] = used / (channels * per_channel) * 1000
            results[f"{label}_stream_key"] = stream
            print(f"  memory {label}: {results[label] / 1024:.0f} KiB per 1000 messages", flush=True)
        results["frame_bytes"] = len(frame(1))
        return results
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(10)


def start_app(port: int, redis_url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_"))}
    env.update(SWITCHBOARD_JWT_SECRET=SECRET, SWITCHBOARD_BROKER_URL=redis_url, SWITCHBOARD_LOG_LEVEL="warning")
    env.update(SWITCHBOARD_API_KEYS=API_KEY)
    env.update(SWITCHBOARD_INSTANCE_ID=f"bench-{port}", SWITCHBOARD_DRAIN_SECONDS="1")
    cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / f"delivery-{port}.log").open("wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


async def crash_round(workdir: Path, subscribers: int) -> list[float]:
    redis_proc, redis_url = await start_redis(workdir)
    ports = [free_port(), free_port()]
    apps = [start_app(port, redis_url, workdir) for port in ports]
    clients: list[SwitchboardClient] = []
    recovered_at: dict[int, float] = {}
    try:
        for port in ports:
            await wait_port(port)

        def url_for(i: int) -> Callable[[], str]:
            # First A; after a disconnect, B (what a load balancer does once A is gone).
            return lambda: f"ws://127.0.0.1:{ports[min(1, clients[i].connections)]}/ws/global/crash"

        async def consume(i: int) -> None:
            async for message in clients[i]:
                if isinstance(message, dict) and message.get("type") == "recovered":
                    recovered_at.setdefault(i, time.monotonic())

        for i in range(subscribers):
            clients.append(SwitchboardClient(url_for(i)))
        consumers = [asyncio.create_task(consume(i)) for i in range(subscribers)]
        for client in clients:
            client.start()
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 60)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[1]}", timeout=5) as http:

            async def stream(seconds: float, rate: float = 200) -> None:
                start = time.monotonic()
                for n in range(int(seconds * rate)):
                    await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                    await http.post("/api/global/crash", json={"content": n}, headers={"X-API-Key": API_KEY})

            await stream(2)
            killed_at = time.monotonic()
            apps[0].send_signal(signal.SIGKILL)
            await stream(4)
        missing = subscribers - len(recovered_at)
        if missing:
            raise RuntimeError(f"{missing} subscribers never recovered")
        for task in consumers:
            task.cancel()
        return [t - killed_at for t in recovered_at.values()]
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        for proc in [*apps, redis_proc]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


def plot(times: list[float], target: Path) -> None:
    ordered = sorted(times)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.step([t * 1000 for t in ordered], [(i + 1) / len(ordered) for i in range(len(ordered))], where="post")
    ax.set_xlabel("ms from SIGKILL to the client's recovered frame")
    ax.set_ylabel("share of clients caught up")
    ax.set_title("Instance crash: time to catch up (all rounds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def write(publish: dict[str, dict[str, float]], memory: dict[str, float], crash: list[list[float]], info: str) -> None:
    off, on = publish["off"], publish["on"]
    every = [t for r in crash for t in r]
    lines = [
        START,
        info,
        "",
        "#### Publish cost of history (one publisher, history 1000 vs off, medians of alternating rounds)",
        "",
        "| | history off | history on | on / off |",
        "| --- | --- | --- | --- |",
        f"| sequential publish latency p50 | {off['p50_us']:.0f} us | {on['p50_us']:.0f} us "
        f"| {on['p50_us'] / off['p50_us']:.2f}x |",
        f"| sequential publish latency p99 | {off['p99_us']:.0f} us | {on['p99_us']:.0f} us "
        f"| {on['p99_us'] / off['p99_us']:.2f}x |",
        f"| batched throughput (100 in flight) | {off['throughput']:,.0f}/s | {on['throughput']:,.0f}/s "
        f"| {on['throughput'] / off['throughput']:.2f}x |",
        f"| redis-server CPU per publish | {off['redis_cpu_us']:.1f} us | {on['redis_cpu_us']:.1f} us "
        f"| {on['redis_cpu_us'] / off['redis_cpu_us']:.2f}x |",
        "",
        f"#### Redis memory for history ({memory['frame_bytes']:.0f}-byte frames)",
        "",
        f"- one channel holding 10,000 messages: **{memory['one_channel'] / 1024:.0f} KiB per 1000 messages** "
        f"(`MEMORY USAGE` of the stream: {memory['one_channel_stream_key'] / 1024:.0f} KiB in all);",
        f"- 1000 channels of 10 messages each: {memory['many_channels'] / 1024:.0f} KiB per 1000 messages, "
        "the per-channel keys and stream overhead included.",
        "",
        f"#### Instance crash to caught up ({len(crash)} rounds x {len(crash[0])} clients, default client backoff)",
        "",
        "| round | p50 | p95 | max |",
        "| --- | --- | --- | --- |",
        *[
            f"| {i + 1} | {pct(r, 0.5) * 1000:.0f} ms | {pct(r, 0.95) * 1000:.0f} ms | {max(r) * 1000:.0f} ms |"
            for i, r in enumerate(crash)
        ],
        f"| all | {pct(every, 0.5) * 1000:.0f} ms | {pct(every, 0.95) * 1000:.0f} ms | {max(every) * 1000:.0f} ms |",
        "",
        "![Time from an instance's death to each client's recovered frame](delivery-recovery.png)",
        END,
    ]
    replace_section(DOCS / "delivery.md", START, END, lines)


async def main(args: argparse.Namespace) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sb-delivery-") as tmp:
        workdir = Path(tmp)
        print("publish cost, history on vs off", flush=True)
        publish = await bench_publish(workdir, args.reps)
        print("redis memory", flush=True)
        memory = await bench_memory(workdir)
        crash = []
        for rep in range(args.reps):
            print(f"crash round {rep + 1}/{args.reps}", flush=True)
            crash.append(await crash_round(workdir, args.subscribers))
            print(f"  p50 {pct(crash[-1], 0.5) * 1000:.0f} ms, max {max(crash[-1]) * 1000:.0f} ms", flush=True)
    plot([t for r in crash for t in r], DOCS / "delivery-recovery.png")
    info = (
        f"Produced by `{args.command}` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Linux {platform.release()}; {time.monotonic() - started:.0f} s in all."
    )
    write(publish, memory, crash, info)
    print(f"wrote {DOCS / 'delivery.md'}", flush=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=200)
    args = parser.parse_args()
    args.command = " ".join(["python -m bench.delivery", *sys.argv[1:]])
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
