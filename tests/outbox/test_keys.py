"""Which publishes a row's idempotency record absorbs: a copy of that row (a relay killed between
publish and delete), and a server API publish under the row's own key; never another row that
happens to have had its id, nor a server API key that looks like a row's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg

from switchboard_client.outbox import DDL
from tests.outbox.harness import Subscriber, instance, pending
from tests.support import API_HEADERS, RedisServer, running, wait_until

INSERT = "INSERT INTO switchboard_outbox (id, channel, data, idempotency_key) VALUES (%s, %s, %s, %s)"


async def insert(url: str, *rows: tuple[int, str, str, str | None]) -> None:
    """Each row in a transaction of its own (its created_at is that transaction's start)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for row in rows:
            await conn.execute(INSERT, row)


def relayed(tmp_path: Path, outbox_url: str, channel: str, steps: Any) -> list[tuple[int, Any]]:
    """Runs ``steps(app, sub)`` with a relaying instance and a subscriber of ``channel``."""
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with running(instance("relay", tmp_path, redis.url, outbox_url)) as (app,):

            async def scenario() -> list[tuple[int, Any]]:
                async with Subscriber(app.ws("/ws"), [channel]) as sub:
                    await steps(app, sub)
                    return list(sub.got[channel])

            got = asyncio.run(scenario())
            wait_until(lambda: pending(outbox_url) == 0, 10, "every row deleted")
            return got
    finally:
        redis.stop()


def test_a_row_with_its_own_key_already_published_through_the_api_is_absorbed(tmp_path: Path, outbox_url: str) -> None:
    """The documented way to publish the same news two ways: one key, one publication."""

    async def steps(app: Any, sub: Subscriber) -> None:
        async with httpx.AsyncClient(base_url=app.http, headers=API_HEADERS) as api:
            body = {"channel": "news:own", "data": {"n": 1}, "idempotency_key": "order-77"}
            assert (await api.post("/api/v1/publish", json=body)).status_code == 200
        await sub.wait_for(1, 10)
        await insert(outbox_url, (77, "news:own", '{"n": 1}', "order-77"), (78, "news:own", '{"n": 2}', None))
        # One lane, in id order: a copy of row 77 would arrive before row 78.
        await sub.wait_for(2, 15)

    got = relayed(tmp_path, outbox_url, "news:own", steps)
    assert got == [(1, {"n": 1}), (2, {"n": 2})]


def test_no_server_api_key_takes_a_row_without_a_key_of_its_own(tmp_path: Path, outbox_url: str) -> None:
    """A row's default key lives in a scope of its own: whatever a backend passes as its key,
    row 77 is still published."""

    async def steps(app: Any, sub: Subscriber) -> None:
        async with httpx.AsyncClient(base_url=app.http, headers=API_HEADERS) as api:
            for key in ("outbox:77", "o:77", "77"):
                body = {"channel": "news:keys", "data": {"api": key}, "idempotency_key": key}
                assert (await api.post("/api/v1/publish", json=body)).status_code == 200
        await sub.wait_for(3, 10)
        await insert(outbox_url, (77, "news:keys", '{"row": 77}', None))
        await sub.wait_for(4, 15)

    got = relayed(tmp_path, outbox_url, "news:keys", steps)
    assert [data for _, data in got] == [{"api": "outbox:77"}, {"api": "o:77"}, {"api": "77"}, {"row": 77}]


def test_a_row_that_reuses_a_relayed_rows_id_is_published(tmp_path: Path, outbox_url: str) -> None:
    """Ids start again when a table is recreated or restored (or a sequence is reset): within the
    idempotency TTL, the new row 5 must not be taken for the old one."""

    async def steps(app: Any, sub: Subscriber) -> None:
        await insert(outbox_url, (5, "news:again", '{"life": 1}', None))
        await sub.wait_for(1, 15)
        wait_until(lambda: pending(outbox_url) == 0, 10, "the first row 5 deleted")
        await insert(outbox_url, (5, "news:again", '{"life": 2}', None))
        await sub.wait_for(2, 15)

    got = relayed(tmp_path, outbox_url, "news:again", steps)
    assert got == [(1, {"life": 1}), (2, {"life": 2})]


def test_the_dsns_own_options_reach_the_claiming_connection(tmp_path: Path, outbox_url: str) -> None:
    """A DSN whose ``options`` set the search_path (the table lives in a schema of the app's):
    the relay's claim timeout is added to them, not put in their place."""
    with psycopg.connect(outbox_url, autocommit=True) as conn:
        conn.execute("DROP TABLE switchboard_outbox, switchboard_outbox_dead")
        conn.execute("CREATE SCHEMA shop")
        conn.execute("SET search_path = shop")
        conn.execute(DDL)
    in_schema = outbox_url + "?options=" + quote("-c search_path=shop")

    async def steps(app: Any, sub: Subscriber) -> None:
        await insert(in_schema, (1, "news:schema", '{"n": 1}', None), (2, "news:schema", '{"n": 2}', None))
        await sub.wait_for(2, 15)

    got = relayed(tmp_path, in_schema, "news:schema", steps)
    assert got == [(1, {"n": 1}), (2, {"n": 2})]
