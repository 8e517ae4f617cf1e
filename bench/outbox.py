"""Outbox relay benchmark: rows per second end to end, and the lag from commit to delivery.

    make bench-delivery                     # runs this after bench.delivery and bench.churn
    .venv/bin/python -m bench.outbox        # on its own: about 40 s on 2 cores

A private PostgreSQL (defaults: fsync on) with the outbox table, a private redis-server, one
instance relaying it (``python -m app``, default outbox settings), and a /ws subscriber on every
channel. Two measurements:
  throughput  ROWS rows committed at once (one transaction, 10 channels), then the time from the
              commit until the subscriber holds the last one: rows per second, end to end.
  lag         one row per transaction at RATE rows/s for SECONDS, from WRITERS connections; per
              row, the time from its commit returning to its arrival at the subscriber: p50/p99.
Results: docs/delivery.md, between the outbox result markers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg
from websockets.asyncio.client import connect

from bench.delivery import pct
from bench.run import BIN, ROOT, SECRET, free_port, start_redis, wait_port
from bench.sections import replace_section
from scripts import cluster_postgres
from switchboard_client.outbox import DBAPI_INSERT, encode, publish

START, END = "<!-- outbox-results:start -->", "<!-- outbox-results:end -->"
CHANNELS = [f"news:bench{n}" for n in range(10)]


class Subscriber:
    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.target = 0
        self.reached = asyncio.Event()

    async def run(self, url: str, ready: asyncio.Event) -> None:
        async with connect(url, max_size=None) as ws:
            await ws.send(orjson.dumps({"id": 1, "op": "connect"}).decode())
            for n, channel in enumerate(CHANNELS, start=2):
                await ws.send(orjson.dumps({"id": n, "op": "subscribe", "channel": channel}).decode())
            replies = 0
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("op") == "pub":
                    self.arrived[frame["data"]["n"]] = time.time()
                    if len(self.arrived) >= self.target:
                        self.reached.set()
                elif frame.get("op") == "ping":
                    await ws.send('{"op":"pong"}')
                elif "id" in frame:
                    replies += 1
                    if replies == len(CHANNELS) + 1:
                        ready.set()

    async def wait(self, count: int, timeout: float) -> None:
        self.target = count
        self.reached.clear()
        if len(self.arrived) < count:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reached.wait(), timeout)


async def throughput(url: str, sub: Subscriber, rows: int) -> float:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction(), conn.cursor() as cur:
            params = [(CHANNELS[n % len(CHANNELS)], encode({"n": n}), None, None) for n in range(rows)]
            await cur.executemany(DBAPI_INSERT, params)
        committed = time.time()
    await sub.wait(rows, 120)
    assert len(sub.arrived) == rows, f"{len(sub.arrived)} of {rows} arrived"
    return rows / (max(sub.arrived.values()) - committed)


async def lag(url: str, sub: Subscriber, rate: float, seconds: float, writers: int, first: int) -> list[float]:
    committed: dict[int, float] = {}
    total = int(rate * seconds)

    async def writer(w: int) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            start = time.monotonic()
            for k, n in enumerate(range(first + w, first + total, writers)):
                # Paced against the clock, not by sleeps between rows: a late row is not made up for by the next.
                await asyncio.sleep(max(0.0, start + k * writers / rate - time.monotonic()))
                async with conn.transaction():
                    await publish(conn, CHANNELS[n % len(CHANNELS)], {"n": n})
                committed[n] = time.time()

    await asyncio.gather(*(writer(w) for w in range(writers)))
    await sub.wait(first + total, 60)
    return [sub.arrived[n] - t for n, t in committed.items() if n in sub.arrived]


def start_app(port: int, redis_url: str, outbox_url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_"))}
    env.update(SWITCHBOARD_JWT_SECRET=SECRET, SWITCHBOARD_BROKER_URL=redis_url, SWITCHBOARD_LOG_LEVEL="warning")
    env.update(SWITCHBOARD_OUTBOX_URL=outbox_url, SWITCHBOARD_CONFIG=str(ROOT / "deploy" / "switchboard.toml"))
    cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / "outbox-app.log").open("wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


async def main(args: argparse.Namespace) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sb-outbox-") as tmp:
        workdir = Path(tmp)
        (workdir / "logs").mkdir()
        pg_pid, pg_dir, outbox_url = cluster_postgres.start(workdir, free_port())
        redis, redis_url = await start_redis(workdir)
        port = free_port()
        app = start_app(port, redis_url, outbox_url, workdir)
        try:
            await wait_port(port)
            sub, ready = Subscriber(), asyncio.Event()
            reading = asyncio.create_task(sub.run(f"ws://127.0.0.1:{port}/ws", ready))
            await asyncio.wait_for(ready.wait(), 10)
            print(f"throughput: {args.rows} rows in one transaction", flush=True)
            rows_per_second = await throughput(outbox_url, sub, args.rows)
            print(f"  {rows_per_second:,.0f} rows/s", flush=True)
            print(f"lag: {args.rate:.0f} rows/s for {args.seconds:.0f} s", flush=True)
            lags = await lag(outbox_url, sub, args.rate, args.seconds, args.writers, args.rows)
            print(f"  p50 {pct(lags, 0.5) * 1000:.1f} ms, p99 {pct(lags, 0.99) * 1000:.1f} ms", flush=True)
            reading.cancel()
        finally:
            app.terminate()
            app.wait(15)
            redis.terminate()
            os.kill(pg_pid, signal.SIGINT)  # fast shutdown; it is our child: wait for it
            await asyncio.to_thread(os.waitpid, pg_pid, 0)
            shutil.rmtree(pg_dir, ignore_errors=True)
    info = (
        f"Produced by `{args.command}` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, PostgreSQL 15, one relaying instance with the default outbox "
        f"settings; {time.monotonic() - started:.0f} s in all."
    )
    write(info, args, rows_per_second, lags)


def write(info: str, args: argparse.Namespace, rows_per_second: float, lags: list[float]) -> None:
    lines = [
        START,
        info,
        "",
        "| | figure |",
        "| --- | --- |",
        f"| throughput, {args.rows:,} rows committed at once over 10 channels, commit to last delivery "
        f"| **{rows_per_second:,.0f} rows/s** |",
        f"| lag from commit to delivery at {args.rate:,.0f} rows/s (one row per transaction, "
        f"{len(lags):,} rows), p50 | {pct(lags, 0.5) * 1000:.1f} ms |",
        f"| the same, p99 | **{pct(lags, 0.99) * 1000:.1f} ms** |",
        f"| the same, max | {max(lags) * 1000:.1f} ms |",
        END,
    ]
    target = ROOT / "docs" / "delivery.md"
    replace_section(target, START, END, lines)
    print(f"wrote {target}", flush=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    args.command = " ".join(["python -m bench.outbox", *sys.argv[1:]])
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
