"""Exactly once and in order per channel, whatever dies when: the relay's instance (SIGKILL, in a
loop), PostgreSQL (restarted), Redis (restarted: rows wait). And a poison row blocks nothing."""

from __future__ import annotations

import asyncio
import functools
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.outbox.harness import Subscriber, check_once_in_order, instance, pending, write_rows
from tests.outbox.postgres import PASSWORD, PostgresServer
from tests.support import API_HEADERS, RedisServer, eventually, running, wait_until

CHANNELS = [f"news:k{n}" for n in range(5)]
KILLS = 4


def stream(total: int) -> tuple[list[tuple[str, Any]], dict[str, list[Any]]]:
    rng = random.Random(total)
    rows = [(rng.choice(CHANNELS), {"n": n}) for n in range(total)]
    sent: dict[str, list[Any]] = defaultdict(list)
    for channel, data in rows:
        sent[channel].append(data)
    return rows, dict(sent)


def test_sigkill_of_the_relay_in_a_loop_loses_and_repeats_nothing(tmp_path: Path, outbox_url: str) -> None:
    """5,000 rows stream in while the relaying instance is SIGKILLed and restarted over and over;
    the subscriber sits on another instance that does not relay."""
    redis = RedisServer(tmp_path / "redis").start()
    rows, sent = stream(5000)
    relay = instance("relay", tmp_path, redis.url, outbox_url, SWITCHBOARD_OUTBOX_BATCH_SIZE="50")
    kills = 0
    try:
        with running(instance("edge", tmp_path, redis.url, None)) as (edge,):

            async def killer(done: asyncio.Event) -> None:
                nonlocal kills
                rng = random.Random(7)
                while not done.is_set() or pending(outbox_url):
                    relay.launch()
                    await asyncio.to_thread(relay.wait_ready)
                    if done.is_set() and kills >= KILLS:
                        return  # the last life drains the rest
                    await asyncio.sleep(rng.uniform(0.1, 0.6))  # mid-claim, most likely
                    relay.kill()
                    kills += 1

            def killed(n: int) -> bool:
                return kills >= n

            async def scenario() -> dict[str, list[tuple[int, Any]]]:
                async with Subscriber(edge.ws("/ws"), CHANNELS) as sub:
                    done = asyncio.Event()
                    killing = asyncio.create_task(killer(done))
                    # In KILLS parts, each after one more kill: the kills land mid-stream however
                    # fast this machine writes rows or starts the relay.
                    part = -(-len(rows) // KILLS)
                    for n in range(KILLS):
                        await eventually(functools.partial(killed, n), 60, f"kill {n}")
                        await write_rows(outbox_url, rows[n * part : (n + 1) * part], per_transaction=50, pause=0.05)
                    done.set()
                    await killing
                    await sub.wait_for(len(rows), 60)
                    await asyncio.sleep(0.5)
                    return dict(sub.got)

            got = asyncio.run(scenario())
            check_once_in_order(got, sent)
            assert kills >= KILLS
    finally:
        relay.stop()
        redis.stop()


def test_postgres_restart_mid_stream(tmp_path: Path, postgres: PostgresServer, outbox_url: str) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    first, second = stream(1500)[0][:1000], stream(1500)[0][1000:]
    sent: dict[str, list[Any]] = defaultdict(list)
    for channel, data in first + second:
        sent[channel].append(data)
    try:
        env = {"SWITCHBOARD_OUTBOX_BATCH_SIZE": "20"}
        with running(instance("relay", tmp_path, redis.url, outbox_url, **env)) as (app,):

            async def scenario() -> dict[str, list[tuple[int, Any]]]:
                async with Subscriber(app.ws("/ws"), CHANNELS) as sub:
                    await write_rows(outbox_url, first, per_transaction=100)
                    await sub.wait_for(50, 10)
                    await asyncio.to_thread(postgres.restart)  # a backlog is still waiting
                    assert pending(outbox_url) > 0
                    await write_rows(outbox_url, second, per_transaction=100)
                    await sub.wait_for(len(first) + len(second), 60)
                    await asyncio.sleep(0.3)
                    return dict(sub.got)

            check_once_in_order(asyncio.run(scenario()), dict(sent))
            log = app.log_text()
            assert "outbox relay: " in log  # the lost connection was logged, then retried
            assert PASSWORD not in log  # nor did any error message carry the DSN's secret
    finally:
        redis.stop()


def history(app_url: str, channel: str) -> list[Any]:
    body = {"channel": channel, "limit": 1000}
    response = httpx.post(f"{app_url}/api/v1/history", json=body, headers=API_HEADERS, timeout=5)
    response.raise_for_status()
    return [pub["data"] for pub in response.json()["publications"]]


def test_rows_wait_while_redis_is_down_and_are_delivered_after(tmp_path: Path, outbox_url: str) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with running(instance("relay", tmp_path, redis.url, outbox_url)) as (app,):

            def metrics() -> str:
                return httpx.get(app.http + "/metrics", timeout=5).text

            redis.stop()
            asyncio.run(write_rows(outbox_url, [("news:r", {"n": n}) for n in range(40)]))
            # The relay tries, fails, counts it, and keeps the rows.
            wait_until(lambda: "switchboard_outbox_errors_total 2.0" in metrics(), 15, "relay errors counted")
            assert pending(outbox_url) == 40
            # The lag is in the gauges: the rows waiting, and the oldest one's age.
            wait_until(lambda: "switchboard_outbox_pending_rows 40.0" in metrics(), 10, "the backlog gauge")
            oldest = [line for line in metrics().splitlines() if line.startswith("switchboard_outbox_oldest_pending")]
            assert float(oldest[0].split()[1]) > 0, oldest
            redis.start()
            wait_until(lambda: pending(outbox_url) == 0, 30, "the rows delivered after Redis is back")
            assert history(app.http, "news:r") == [{"n": n} for n in range(40)]
            wait_until(lambda: "switchboard_outbox_pending_rows 0.0" in metrics(), 10, "the backlog gauge back to 0")
    finally:
        redis.stop()


def test_a_poison_row_is_dead_lettered_and_blocks_nothing(tmp_path: Path, outbox_url: str) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        env = {"SWITCHBOARD_MAX_MESSAGE_BYTES": "2048"}
        with running(instance("relay", tmp_path, redis.url, outbox_url, **env)) as (app,):
            with psycopg.connect(outbox_url) as conn:
                insert = (
                    "INSERT INTO switchboard_outbox (channel, data, idempotency_key, partition) VALUES (%s, %s, %s, %s)"
                )
                for n, (channel, data, key) in enumerate(
                    [
                        ("news:p", '{"n": 0}', None),
                        ("news:p", '{"big": "' + "x" * 4000 + '"}', None),  # over the size limit
                        ("nosuch:x", '{"n": -1}', None),  # a namespace nobody declared
                        ("news:p", '{"n": -2}', "has space"),  # an idempotency key we refuse
                        ("news:p", '{"n": 1}', None),
                    ]
                ):
                    conn.execute(insert, (channel, data, key, 1))  # one partition: one lane for all
                    assert n >= 0
            wait_until(lambda: pending(outbox_url) == 0, 15, "the outbox to empty")
            assert history(app.http, "news:p") == [{"n": 0}, {"n": 1}]
            with psycopg.connect(outbox_url) as conn:
                dead = conn.execute("SELECT channel, reason FROM switchboard_outbox_dead ORDER BY id").fetchall()
            assert [channel for channel, _ in dead] == ["news:p", "nosuch:x", "news:p"]
            assert dead[0][1].startswith("1"), dead  # each reason names the error code
            assert "unknown" in dead[1][1].lower() or "namespace" in dead[1][1].lower(), dead
            text = httpx.get(app.http + "/metrics", timeout=5).text
            assert "switchboard_outbox_dead_lettered_total 3.0" in text
            assert "switchboard_outbox_delivered_total 2.0" in text
            assert app.log_text().count("dead-lettered") == 3
    finally:
        redis.stop()
