"""What traces cost the fan-out: two instances with tracing off against two with 1% sampling.

    make bench-tracing                     # about 1 minute
    .venv/bin/python -m bench.tracing --messages 300 --reps 5

One Redis; a pair of instances per variant, each pair with its own channel: 1000 subscribers
(500 on each instance) and one publishing socket on the first. ``on`` is ``SWITCHBOARD_TRACING``
with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` and ``OTEL_TRACES_SAMPLER_ARG=0.01``,
exporting over OTLP/HTTP to a collector this process runs (tests/otlp.py), so the export is paid
for too. The variants' bursts alternate, so machine noise hits both alike; the figure is
deliveries per app CPU-second (both instances' /proc times), median of ``--reps`` bursts each.
Results: docs/benchmarks.md (between the tracing markers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import BIN, ROOT, SECRET, cpu_seconds, free_port, start_redis, wait_port
from bench.sections import replace_section
from bench.wsclient import Client, connect
from tests.otlp import Collector

START, END = "<!-- tracing:start -->", "<!-- tracing:end -->"
SUBSCRIBERS = 1000
SAMPLING = "0.01"


def start_app(port: int, url: str, workdir: Path, otel: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "OTEL_"))}
    env.update(SWITCHBOARD_JWT_SECRET=SECRET, SWITCHBOARD_BROKER_URL=url, SWITCHBOARD_LOG_LEVEL="warning")
    env.update(SWITCHBOARD_RATE_LIMIT_PER_SECOND="1000000", SWITCHBOARD_RATE_LIMIT_BURST="1000000")
    env.update(SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND="100000", SWITCHBOARD_INSTANCE_ID=f"bench-{port}")
    env.update(otel)
    cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / f"app-{port}.log").open("wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


class Variant:
    def __init__(self, name: str, otel: dict[str, str]) -> None:
        self.name, self.otel = name, otel
        self.apps: list[subprocess.Popen[bytes]] = []
        self.ports = [free_port(), free_port()]
        self.received = 0
        self.subs: list[Client] = []
        self.pub: Client | None = None
        self.rates: list[float] = []

    def on_payload(self, seq: int, sent_at: float) -> None:
        self.received += 1

    async def start(self, url: str, workdir: Path) -> None:
        self.apps = [start_app(port, url, workdir, self.otel) for port in self.ports]
        for port in self.ports:
            await wait_port(port)

    async def join(self) -> None:
        channel = f"bench-{self.name}"
        for i in range(SUBSCRIBERS):
            self.subs.append(await connect("127.0.0.1", self.ports[i % 2], channel, "plain", self.on_payload))
        self.pub = await connect("127.0.0.1", self.ports[0], channel, "plain", lambda s, t: None)

    async def burst(self, messages: int) -> None:
        assert self.pub is not None
        self.received = 0
        expected = messages * SUBSCRIBERS
        before = cpu_seconds([a.pid for a in self.apps])
        for n in range(messages):
            self.pub.publish("", {"s": n, "t": time.time()})
            if n % 10 == 9:
                await asyncio.sleep(0)
        deadline = time.monotonic() + 120
        while self.received < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - counting frames
            await asyncio.sleep(0.05)
        used = cpu_seconds([a.pid for a in self.apps]) - before
        assert self.received == expected, f"{self.name}: {self.received} of {expected} delivered"
        self.rates.append(self.received / max(used, 1e-6))

    def stop(self) -> None:
        for client in (*self.subs, *([self.pub] if self.pub else [])):
            client.close()
        for app in self.apps:
            app.terminate()
            app.wait(15)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sb-tracing-") as tmp, Collector() as collector:
        work = Path(tmp)
        redis, url = await start_redis(work)
        on = {
            "SWITCHBOARD_TRACING": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": SAMPLING,
        }
        # Every message traced: what one sampled message costs, and that the bursts can see it.
        variants = [Variant("off", {}), Variant("on", on), Variant("all", {**on, "OTEL_TRACES_SAMPLER_ARG": "1"})]
        try:
            for variant in variants:
                await variant.start(url, work)
            await asyncio.sleep(1.0)  # readiness: the brokers connect in the background
            for variant in variants:
                await variant.join()
            await asyncio.sleep(1.0)  # every join done before the clock starts
            for variant in variants:
                await variant.burst(args.messages // 5)  # warm-up, not counted
                variant.rates.clear()
            for rep in range(args.reps):
                for variant in variants if rep % 2 == 0 else variants[::-1]:
                    await variant.burst(args.messages)
                print(
                    f"rep {rep + 1}: " + ", ".join(f"{v.name} {v.rates[-1]:,.0f}/CPU-s" for v in variants), flush=True
                )
            await asyncio.sleep(6)  # the batch processors' next export (5 s by default)
        finally:
            for variant in variants:
                variant.stop()
            redis.terminate()
            redis.wait(10)
        spans = collector.snapshot()
    off, traced, every = (statistics.median(v.rates) for v in variants)
    sampled = {
        v.name: {s.trace_id for s in spans if s.instance.removeprefix("bench-") in map(str, v.ports)} for v in variants
    }
    return {
        "off": off,
        "on": traced,
        "all": every,
        "ratio": traced / off,
        "all_ratio": every / off,
        "sampled": len(sampled["on"]),
        "sent": int(args.messages * (args.reps + 0.2)),
    }


def write(result: dict[str, Any], args: argparse.Namespace) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    info = f"{when}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        START,
        f"Produced by `{' '.join(['python -m bench.tracing', *sys.argv[1:]])}` on {info}: one channel, "
        f"{SUBSCRIBERS} subscribers on 2 instances, {args.messages} messages per burst, median of {args.reps} "
        "alternating bursts per variant.",
        "",
        "| | deliveries per app CPU-second | vs off |",
        "| --- | --- | --- |",
        f"| tracing off | {result['off']:,.0f} | 1.00x |",
        f"| tracing on, {float(SAMPLING):.0%} sampling, OTLP/HTTP export | {result['on']:,.0f} | "
        f"{result['ratio']:.3f}x |",
        f"| tracing on, every message traced | {result['all']:,.0f} | {result['all_ratio']:.3f}x |",
        "",
        f"At 1% sampling {result['sampled']} of the {result['sent']:,} messages published were traced "
        "(each one `publish` span and a `deliver` span per instance).",
        END,
    ]
    replace_section(ROOT / "docs" / "benchmarks.md", START, END, lines, heading="Traces")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300, help="publishes per burst")
    parser.add_argument("--reps", type=int, default=5, help="bursts per variant")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    found = asyncio.run(main(arguments))
    print(found)
    write(found, arguments)
    print("written: docs/benchmarks.md")
