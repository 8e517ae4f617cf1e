"""A numbered message stream and subscribers that count what they got, for the chaos tests.

Subscribers are ``switchboard_client.realtime.SwitchboardClient``s (the package's own reconnecting, resuming
client) on ``/ws/global/{channel}``. Each records every frame as it arrives, so a duplicate or a
reordering is seen, not smoothed over. The publisher posts ``{"n": 1..total}`` over HTTP and
retries refused publishes (503 while Redis is down, a dead instance): a refusal means "not
published", so a retry never duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from switchboard_client.realtime import SwitchboardClient
from tests.support import API_HEADERS, AppProcess


@dataclass
class Subscriber:
    name: str
    client: SwitchboardClient
    numbers: list[int] = field(default_factory=list)
    recovered: list[dict[str, Any]] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)  # len(numbers) when each recovered frame came
    arrivals: dict[int, float] = field(default_factory=dict)
    # What happened on each connection, for the failure message: (instance, frame summary).
    events: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def consume(self) -> None:
        async for frame in self.client:
            if not isinstance(frame, dict):
                continue
            if frame.get("type") == "recovered":
                self.recovered.append(frame)
                self.marks.append(len(self.numbers))
                last = self.numbers[-1] if self.numbers else None
                self.events.append(f"{self.client.instance}: {frame} after n={last}")
            elif isinstance(frame.get("content"), dict) and "n" in frame["content"]:
                n = frame["content"]["n"]
                self.numbers.append(n)
                self.arrivals.setdefault(n, time.monotonic())

    def lost(self, expected: range) -> int:
        return len(set(expected) - set(self.numbers))

    def explain(self, expected: range) -> str:
        """Which numbers are missing, and what each connection was told: for failure messages."""
        missing = sorted(set(expected) - set(self.numbers))
        shown = f"{missing[:5]}...{missing[-5:]}" if len(missing) > 10 else str(missing)
        return f"{self.name}: {len(missing)} missing {shown}, dup {self.duplicates()}; " + " | ".join(self.events)

    def duplicates(self) -> int:
        return len(self.numbers) - len(set(self.numbers))

    def in_order(self) -> bool:
        return all(a < b for a, b in zip(self.numbers, self.numbers[1:], strict=False))


def subscribe(name: str, url: str | Callable[[], str], **options: Any) -> Subscriber:
    options.setdefault("base_delay", 0.2)
    options.setdefault("max_delay", 2.0)
    sub = Subscriber(name, SwitchboardClient(url, **options))
    sub.client.start()
    sub.task = asyncio.create_task(sub.consume())
    return sub


async def all_connected(subs: list[Subscriber], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(s.client.connected.wait() for s in subs))


async def wait_for_numbers(subs: list[Subscriber], expected: range, timeout: float) -> None:
    """Until every subscriber has every expected number (or the deadline: the asserts then say why)."""
    want = set(expected)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not all(want <= set(s.numbers) for s in subs):  # noqa: ASYNC110 - many clients, one condition
                await asyncio.sleep(0.05)


async def close_all(subs: list[Subscriber]) -> None:
    await asyncio.gather(*(s.client.close() for s in subs))
    for s in subs:
        if s.task is not None:
            s.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await s.task


@dataclass
class Publisher:
    """Publishes n = start..stop-1 at ``rate`` per second, retrying refusals until ``patience`` runs out."""

    url: Callable[[], str]
    channel: str
    published_at: dict[int, float] = field(default_factory=dict)
    refused: int = 0

    async def run(self, numbers: range, rate: float, patience: float = 30.0) -> None:
        headers = API_HEADERS
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with httpx.AsyncClient(timeout=5) as http:
            for i, n in enumerate(numbers):
                # Pacing, not waiting on a condition: a steady rate is what the scenario asks for.
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                deadline = loop.time() + patience
                while True:
                    try:
                        response = await http.post(
                            f"{self.url()}/api/global/{self.channel}", json={"content": {"n": n}}, headers=headers
                        )
                        if response.status_code == 202:
                            break
                        assert response.status_code in (502, 503), response.text
                    except httpx.TransportError:
                        pass
                    self.refused += 1
                    assert loop.time() < deadline, f"message {n} refused for {patience}s"
                    await asyncio.sleep(0.05)
                self.published_at[n] = time.monotonic()


def catch_up_seconds(subs: list[Subscriber], pub: Publisher, since: float) -> float:
    """From ``since`` until every subscriber had the first message published after it."""
    return max(arrivals_after(subs, pub.published_at, since))


def arrivals_after(subs: list[Subscriber], published_at: dict[int, float], since: float) -> list[float]:
    """Per subscriber that got it: seconds from ``since`` to the first message published after it."""
    first = min(n for n, t in published_at.items() if t > since)
    return [s.arrivals[first] - since for s in subs if first in s.arrivals]


async def publish_keyed(
    apps: list[AppProcess], channels: list[str], numbers: range, rate: float, published_at: dict[int, float]
) -> int:
    """Each number to every channel by the server API, alternating instances, each with its own
    idempotency key, so that a retry after a 503 (outcome unknown, in a failover) is safe. Retries
    for up to 30 s, never longer; returns how many attempts were refused."""
    refused = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with httpx.AsyncClient(timeout=5, headers=API_HEADERS) as http:
        for i, n in enumerate(numbers):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))  # pacing, not waiting
            for channel in channels:
                body = {"channel": channel, "data": {"n": n}, "idempotency_key": f"{channel}-{n}"}
                deadline = loop.time() + 30
                while True:
                    try:
                        response = await http.post(f"{apps[n % 2].http}/api/v1/publish", json=body)
                        if response.status_code == 200:
                            break
                        assert response.status_code == 503, response.text  # the usual refusal, never a hang
                    except httpx.TransportError:
                        pass
                    refused += 1
                    assert loop.time() < deadline, f"{channel} {n} refused for 30 s"
                    await asyncio.sleep(0.05)
            published_at[n] = time.monotonic()
    return refused


def assert_whole_or_told(sub: Subscriber, expected: range) -> None:
    """Every message once and in order; or told (``ok:false``) what was lost, and in order after."""
    told = [mark for mark, r in zip(sub.marks, sub.recovered, strict=True) if not r["ok"]]
    if not told:
        assert sub.numbers == list(expected), sub.explain(expected)
    else:
        after = sub.numbers[told[-1] :]
        assert after == sorted(set(after)), sub.explain(expected)


def report(title: str, subs: list[Subscriber], expected: range, **extra: object) -> dict[str, int]:
    """Print and return what was counted."""
    counts = {
        "subscribers": len(subs),
        "messages": len(expected),
        "received": sum(len(s.numbers) for s in subs),
        "lost": sum(s.lost(expected) for s in subs),
        "duplicates": sum(s.duplicates() for s in subs),
        "out_of_order": sum(not s.in_order() for s in subs),
        "recovered_ok": sum(bool(r["ok"]) for s in subs for r in s.recovered),
        "recovered_lost": sum(not r["ok"] for s in subs for r in s.recovered),
        "reconnects": sum(max(0, s.client.connections - 1) for s in subs),
    }
    details = ", ".join(f"{k}={v}" for k, v in {**counts, **extra}.items())
    print(f"\n[chaos] {title}: {details}")
    return counts
