"""Two, then three instances relay one outbox at once: no row twice, none out of order per channel."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from tests.outbox.harness import Subscriber, check_once_in_order, instance, write_rows
from tests.support import RedisServer, running

CHANNELS = [f"news:m{n}" for n in range(12)]


def delivered_by(app_url: str) -> float:
    for line in httpx.get(app_url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("switchboard_outbox_delivered_total "):
            return float(line.split()[1])
    raise AssertionError("no switchboard_outbox_delivered_total")


def test_two_then_three_relays_share_the_work_without_duplicates(tmp_path: Path, outbox_url: str) -> None:
    rng = random.Random(3)
    rows = [(rng.choice(CHANNELS), {"n": n}) for n in range(3000)]
    sent: dict[str, list[Any]] = defaultdict(list)
    for channel, data in rows:
        sent[channel].append(data)
    redis = RedisServer(tmp_path / "redis").start()
    env = {"SWITCHBOARD_OUTBOX_BATCH_SIZE": "40"}
    apps = [instance(f"relay{n}", tmp_path, redis.url, outbox_url, **env) for n in range(3)]
    try:
        with running(apps[0], apps[1]):

            async def scenario() -> dict[str, list[tuple[int, Any]]]:
                async with Subscriber(apps[0].ws("/ws"), CHANNELS) as sub:
                    writing = asyncio.create_task(write_rows(outbox_url, rows, per_transaction=30, pause=0.02))
                    await sub.wait_for(len(rows) // 3, 30)
                    await asyncio.to_thread(apps[2].start)  # a third relay joins mid-stream
                    await writing
                    await sub.wait_for(len(rows), 60)
                    await asyncio.sleep(0.3)
                    return dict(sub.got)

            try:
                check_once_in_order(asyncio.run(scenario()), dict(sent))
                shares = [delivered_by(app.http) for app in apps]
                assert sum(shares) == len(rows)
                assert all(share > 0 for share in shares[:2]), shares  # both first relays did work
            finally:
                apps[2].stop()
    finally:
        redis.stop()
