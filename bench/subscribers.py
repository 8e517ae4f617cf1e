"""A load-generator process: holds many subscriber sockets and checks what they receive.

Started by bench/run.py with a JSON spec as its argument; talks JSON lines over stdin/stdout:
``{"cmd": "status"}``, ``{"cmd": "report"}``, ``{"cmd": "quit"}``.

Message ``seq`` goes to channel ``channels[seq % len(channels)]``; negative seqs are warm-up
probes. ``channel_of[n]`` is socket n's channel index, or a list of them (``/ws``: one socket in
many channels). Each socket records, per phase, which seqs it saw: a missing one is lost, a repeat is a
duplicate, and in latency phases every delivery's ``now - sent_at`` is kept.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

import uvloop

from bench.sseclient import SseClient
from bench.wsclient import Client, subscribe


class Tracker:
    def __init__(self, channel_indices: set[int], channels: int, phases: list[dict[str, Any]]) -> None:
        self.cis, self.nch, self.phases = channel_indices, channels, phases
        self.seen = [bytearray(p["end"] - p["start"]) for p in phases]
        self.dups = [0] * len(phases)
        self.warm = False
        self.latencies: list[float] = []

    def on_payload(self, seq: int, sent_at: float) -> None:
        if seq < 0:
            self.warm = True
            return
        for i, phase in enumerate(self.phases):
            if phase["start"] <= seq < phase["end"]:
                seen = self.seen[i]
                idx = seq - phase["start"]
                if seen[idx]:
                    self.dups[i] += 1
                else:
                    seen[idx] = 1
                if phase.get("latency"):
                    self.latencies.append(time.time() - sent_at)
                return

    def expected(self, i: int) -> int:
        phase = self.phases[i]
        return sum(1 for seq in range(phase["start"], phase["end"]) if seq % self.nch in self.cis)


async def main(spec: dict[str, Any]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    channels: list[str] = spec["channels"]
    phases: list[dict[str, Any]] = spec["phases"]
    targets: list[list[Any]] = spec["targets"]
    trackers: list[Tracker] = []
    clients: list[Client | SseClient] = []
    semaphore = asyncio.Semaphore(spec.get("concurrency", 50))

    async def open_one(n: int) -> None:
        of = spec["channel_of"][n]
        cis = of if isinstance(of, list) else [of]
        host, port = targets[spec["target_of"][n]]
        tracker = Tracker(set(cis), len(channels), phases)
        async with semaphore:
            names = [channels[ci] for ci in cis]
            clients.append(await subscribe(host, port, names, spec["flavor"], tracker.on_payload))
        trackers.append(tracker)

    started = time.perf_counter()
    await asyncio.gather(*(open_one(n) for n in range(len(spec["channel_of"]))))
    emit({"event": "ready", "connected": len(clients), "connect_seconds": time.perf_counter() - started})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)["cmd"]
        if cmd == "status":
            emit(
                {
                    "warm": sum(t.warm for t in trackers),
                    "unique": [sum(sum(t.seen[i]) for t in trackers) for i in range(len(phases))],
                }
            )
        elif cmd == "report":
            report = []
            for i in range(len(phases)):
                unique = sum(sum(t.seen[i]) for t in trackers)
                expected = sum(t.expected(i) for t in trackers)
                report.append(
                    {
                        "unique": unique,
                        "expected": expected,
                        "lost": expected - unique,
                        "duplicates": sum(t.dups[i] for t in trackers),
                    }
                )
            closed = sum(1 for c in clients if c.closed.done())
            emit({"phases": report, "latencies": [x for t in trackers for x in t.latencies], "closed": closed})
        elif cmd == "quit":
            break
    for client in clients:
        client.close()


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    uvloop.run(main(json.loads(sys.argv[1])))
