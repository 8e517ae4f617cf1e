"""What the metrics cost on the broadcast path: Hub.dispatch to N members, metrics on vs off.

    .venv/bin/python -m bench.dispatch_overhead [--members 1000] [--rounds 30]

Both variants run interleaved in one process, so machine noise hits them alike; the result is a
ratio. Members are real Connection objects (their offer() is what dispatch calls); nothing drains
their queues, so each round clears them, as a writer would.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from app import metrics
from app.broker.memory import MemoryBroker
from app.config import Settings
from app.connection import Connection
from app.hub import Hub
from app.protocol import encode, header, pack


class _Socket:
    """Just enough of a Starlette WebSocket for Connection.__init__ (no fast path: frames queue)."""

    scope: dict[str, Any] = {}  # noqa: RUF012

    async def _send(self, message: Any) -> None: ...

    async def _receive(self) -> Any: ...


class _Off:
    """A metric that does nothing: stands in for every metric in the 'off' variant."""

    def inc(self, *_: Any) -> None: ...

    def observe(self, *_: Any) -> None: ...

    def labels(self, *_: Any) -> _Off:
        return self


def members(n: int) -> list[Connection]:
    settings = Settings(jwt_secret="x" * 40, send_queue_size=10_000)
    return [Connection(_Socket(), "bench", settings) for _ in range(n)]  # type: ignore[arg-type]


async def run(n_members: int, rounds: int, per_round: int) -> dict[str, float]:
    hub = Hub(MemoryBroker())
    conns = members(n_members)
    for conn in conns:
        await hub.join(conn, "bench")
    envelope = pack(header(), encode({"content": "x" * 80, "channel": "bench"}))
    names = ["HOT_BROADCASTS", "HOT_DELIVERED", "HOT_FANOUT", "HOT_PUBLISH_TO_DELIVERY", "HOT_QUEUE_DEPTH"]
    real = {name: getattr(metrics, name) for name in names}
    samples: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(rounds):
        for variant in ("on", "off"):
            for name in names:
                setattr(metrics, name, real[name] if variant == "on" else _Off())
            started = time.perf_counter()
            for _ in range(per_round):
                hub.dispatch("bench", envelope)
                for conn in conns:
                    conn._queue.clear()
            if variant == "on":
                metrics.flush()  # the once-a-second flush, charged to the "on" variant
            samples[variant].append((time.perf_counter() - started) / per_round)
    for name in names:
        setattr(metrics, name, real[name])
    on, off = statistics.median(samples["on"]), statistics.median(samples["off"])
    return {"on_us": on * 1e6, "off_us": off * 1e6, "overhead_pct": (on / off - 1) * 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(run(args.members, args.rounds, args.per_round))
    print(
        f"dispatch to {args.members} members: metrics on {result['on_us']:.1f} us, "
        f"off {result['off_us']:.1f} us per broadcast; overhead {result['overhead_pct']:+.2f}% "
        f"(median of {args.rounds} interleaved rounds)"
    )


if __name__ == "__main__":
    main()
