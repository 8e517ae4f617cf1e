"""Committed rows reach a /ws subscriber once each, in order per channel; rolled-back rows never do."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import psycopg

from switchboard_client.outbox import publish
from tests.outbox.harness import Subscriber, check_once_in_order, instance, pending
from tests.outbox.postgres import PASSWORD
from tests.support import RedisServer, running

WRITERS = 4


async def writer(url: str, n: int, sent: dict[str, list[Any]], shared: list[Any]) -> None:
    """Transactions of 1-5 rows on its own channel and the shared one; a third of them roll back."""
    rng = random.Random(n)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for t in range(30):
            commit = rng.random() > 1 / 3
            rows = [{"w": n, "t": t, "i": i, "committed": commit} for i in range(rng.randint(1, 5))]
            async with conn.transaction(force_rollback=not commit):
                for row in rows:
                    await publish(conn, f"news:w{n}", row)
                await publish(conn, "news:shared", rows[0])
            if commit:
                sent[f"news:w{n}"].extend(rows)
                shared.append(rows[0])
            await asyncio.sleep(rng.random() / 100)


def test_committed_rows_arrive_once_and_rolled_back_rows_never(tmp_path: Path, outbox_url: str) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with running(instance("relay", tmp_path, redis.url, outbox_url)) as (app,):

            async def scenario() -> tuple[dict[str, list[tuple[int, Any]]], dict[str, list[Any]], list[Any]]:
                channels = [f"news:w{n}" for n in range(WRITERS)] + ["news:shared", "news:end"]
                sent: dict[str, list[Any]] = defaultdict(list)
                shared: list[Any] = []
                async with Subscriber(app.ws("/ws"), channels) as sub:
                    await asyncio.gather(*(writer(outbox_url, n, sent, shared) for n in range(WRITERS)))
                    # A last row, committed after all others: once it is here, so is everything
                    # that will ever come on a lane it follows, and any rolled-back row would be.
                    async with await psycopg.AsyncConnection.connect(outbox_url) as conn:
                        await publish(conn, "news:end", {"end": True})
                    await sub.wait_for(sum(map(len, sent.values())) + len(shared) + 1, 30)
                    await asyncio.sleep(0.3)  # a late duplicate would land here, and fail the check
                    return dict(sub.got), dict(sent), shared

            got, sent, shared = asyncio.run(scenario())
            assert got.pop("news:end")[0][1] == {"end": True}
            shared_got = got.pop("news:shared")
            check_once_in_order(got, sent)
            # Writers raced on news:shared: every committed row once, none rolled back.
            assert sorted((d["w"], d["t"]) for _, d in shared_got) == sorted((d["w"], d["t"]) for d in shared)
            assert all(d["committed"] for _, d in shared_got)
            assert pending(outbox_url) == 0
            metrics = httpx.get(app.http + "/metrics", timeout=5).text
            delivered = sum(map(len, sent.values())) + len(shared) + 1
            assert f"switchboard_outbox_delivered_total {float(delivered)}" in metrics
            log = app.log_text()
            assert "outbox relay on 127.0.0.1:" in log
            assert PASSWORD not in log  # the DSN is a secret: host and database only
    finally:
        redis.stop()
