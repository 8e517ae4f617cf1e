"""What Fossil deltas save on a dashboard-like stream, and what they cost the server.

    make bench-delta                       # about 1 minute
    .venv/bin/python -m bench.delta --subscribers 100 --messages 500 --reps 5

One Redis, two instances. On the first, two channels of ``--subscribers`` Centrifugo JSON
sockets each (``/connection/websocket``): on one every socket negotiates ``delta: "fossil"``, on
the other none does. Through the second instance's server API a publisher sends each channel the
same sequence of ~4 KB JSON states, each changing one field (a dashboard's panels). Per variant:
the bytes of publication frames the subscribers received per publication (WebSocket message
payloads, permessage-deflate off so they are what travels), and the first instance's CPU per
delivery (from /proc: the fan-out, the publisher's instance is not counted). Bursts alternate
between the variants; figures are medians over ``--reps``. One delta subscriber rebuilds every
state with tests/fossil_spec.py, so the bench also checks what it measures.
Results: docs/benchmarks.md (between the delta markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

from bench.run import BIN, ROOT, SECRET, cpu_seconds, free_port, start_redis, wait_port
from bench.sections import replace_section
from tests.fossil_spec import apply

START, END = "<!-- delta:start -->", "<!-- delta:end -->"
API_KEY = "bench-api-key-0123456789-abcdefghijklmnopqrstuvwxyz"
NAMESPACES = '[namespaces.dash]\nhistory_size = 100\nhistory_ttl = 600\nallowed_delta_types = ["fossil"]\n'
PANELS = 50


def start_app(port: int, url: str, config: Path, workdir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_BROKER_URL=url, SWITCHBOARD_CONFIG=str(config), SWITCHBOARD_API_KEYS=API_KEY)
    env.update(SWITCHBOARD_LOG_LEVEL="warning", SWITCHBOARD_INSTANCE_ID=f"bench-{port}")
    env.update(SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND="100000", SWITCHBOARD_JWT_SECRET=SECRET)
    cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / f"app-{port}.log").open("wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


def dashboard() -> dict[str, Any]:
    """About 4 KB: panels with a title, a unit and a value."""
    return {
        f"panel_{i}": {"title": f"Requests per second, service {i}", "unit": "req/s", "value": 0} for i in range(PANELS)
    }


class Subscriber:
    def __init__(self, check: bool) -> None:
        self.bytes = self.pubs = 0
        self.base = b""
        self.rebuilt: list[Any] | None = [] if check else None  # one subscriber checks the states
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, port: int, channel: str, delta: bool) -> None:
        self.ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", compression=None)
        await self.ws.send(orjson.dumps({"id": 1, "connect": {}}).decode())
        await self.ws.recv()
        params: dict[str, Any] = {"channel": channel, **({"delta": "fossil"} if delta else {})}
        await self.ws.send(orjson.dumps({"id": 2, "subscribe": params}).decode())
        reply = orjson.loads(await self.ws.recv())
        assert reply["subscribe"].get("delta", False) is delta, reply
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for message in self.ws:
            raw = message.encode() if isinstance(message, str) else message
            if raw == b"{}":
                await self.ws.send("{}")
                continue
            self.bytes += len(raw)
            self.pubs += 1
            if self.rebuilt is not None:
                pub = orjson.loads(raw)["push"]["pub"]
                data = pub["data"].encode() if isinstance(pub["data"], str) else orjson.dumps(pub["data"])
                self.base = apply(self.base, data) if pub.get("delta") else data
                self.rebuilt.append(json.loads(self.base))

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await self.task


class Variant:
    def __init__(self, name: str, delta: bool) -> None:
        self.name, self.delta, self.channel = name, delta, f"dash:{name}"
        self.subs: list[Subscriber] = []
        self.bytes_per_pub: list[float] = []
        self.cpu_per_delivery: list[float] = []

    async def join(self, port: int, count: int) -> None:
        for i in range(count):
            sub = Subscriber(check=self.delta and i == 0)
            await sub.start(port, self.channel, self.delta)
            self.subs.append(sub)

    async def burst(self, api: httpx.AsyncClient, states: list[dict[str, Any]], pid: int) -> None:
        before_bytes, before_pubs = sum(s.bytes for s in self.subs), sum(s.pubs for s in self.subs)
        expected = before_pubs + len(states) * len(self.subs)
        cpu = cpu_seconds([pid])
        for state in states:
            (await api.post("/api/v1/publish", json={"channel": self.channel, "data": state})).raise_for_status()
        deadline = time.monotonic() + 60
        while sum(s.pubs for s in self.subs) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        used = cpu_seconds([pid]) - cpu
        delivered = sum(s.pubs for s in self.subs) - before_pubs
        assert delivered == len(states) * len(self.subs), f"{self.name}: {delivered} delivered"
        self.bytes_per_pub.append((sum(s.bytes for s in self.subs) - before_bytes) / delivered)
        self.cpu_per_delivery.append(used / delivered)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(1)
    state = dashboard()
    with tempfile.TemporaryDirectory(prefix="sb-delta-") as tmp:
        work = Path(tmp)
        config = work / "switchboard.toml"
        config.write_text(NAMESPACES)
        redis, url = await start_redis(work)
        ports = [free_port(), free_port()]
        apps = [start_app(port, url, config, work) for port in ports]
        variants = [Variant("delta", True), Variant("full", False)]
        published: list[dict[str, Any]] = []
        try:
            for port in ports:
                await wait_port(port)
            await asyncio.sleep(1.0)  # the brokers connect in the background
            for variant in variants:
                await variant.join(ports[0], args.subscribers)
            headers = {"X-API-Key": API_KEY}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[1]}", headers=headers) as api:
                for rep in range(args.reps + 1):  # the first is a warm-up, not counted
                    states = []
                    for _ in range(args.messages):
                        state[f"panel_{rng.randrange(PANELS)}"]["value"] = rng.randrange(10**6)
                        states.append(json.loads(orjson.dumps(state)))
                    published += states
                    for variant in variants if rep % 2 == 0 else variants[::-1]:
                        await variant.burst(api, states, apps[0].pid)
                    if rep == 0:
                        for variant in variants:
                            variant.bytes_per_pub.clear()
                            variant.cpu_per_delivery.clear()
                    else:
                        print(
                            f"rep {rep}: " + ", ".join(f"{v.name} {v.bytes_per_pub[-1]:,.0f} B/pub" for v in variants)
                        )
            checker = variants[0].subs[0]
            assert checker.rebuilt == published, "a delta subscriber did not rebuild every state"
            for variant in variants:
                for sub in variant.subs:
                    await sub.close()
        finally:
            for app in apps:
                app.terminate()
                app.wait(15)
            redis.terminate()
            redis.wait(10)
    delta, full = variants
    return {
        "state_bytes": len(orjson.dumps(state)),
        "bytes_delta": statistics.median(delta.bytes_per_pub),
        "bytes_full": statistics.median(full.bytes_per_pub),
        "cpu_delta": statistics.median(delta.cpu_per_delivery),
        "cpu_full": statistics.median(full.cpu_per_delivery),
    }


def write(result: dict[str, Any], args: argparse.Namespace) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    info = f"{when}, {os.cpu_count()} cores, Python {platform.python_version()}"
    bytes_ratio = result["bytes_delta"] / result["bytes_full"]
    cpu_ratio = result["cpu_delta"] / result["cpu_full"]
    lines = [
        START,
        f"Produced by `{' '.join(['python -m bench.delta', *sys.argv[1:]])}` on {info}: a "
        f"{result['state_bytes']:,}-byte JSON state with one field changing per publication, "
        f"{args.subscribers} subscribers per channel, {args.messages} publications per burst, median of "
        f"{args.reps} alternating bursts per variant.",
        "",
        "| | bytes per publication frame | server CPU per delivery |",
        "| --- | --- | --- |",
        f"| no delta | {result['bytes_full']:,.0f} | {result['cpu_full'] * 1e6:.1f} µs |",
        f'| `delta: "fossil"` | {result["bytes_delta"]:,.0f} | {result["cpu_delta"] * 1e6:.1f} µs |',
        f"| delta / no delta | {bytes_ratio:.3f}x | {cpu_ratio:.2f}x |",
        END,
    ]
    replace_section(ROOT / "docs" / "benchmarks.md", START, END, lines, heading="Delta compression")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100, help="sockets per channel")
    parser.add_argument("--messages", type=int, default=500, help="publications per burst")
    parser.add_argument("--reps", type=int, default=5, help="bursts per variant")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    found = asyncio.run(main(arguments))
    print(found)
    write(found, arguments)
    print("written: docs/benchmarks.md")
