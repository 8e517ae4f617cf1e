"""docs/outbox.md and the outbox example of docs/server-api.md, run as the pages show them; and the
helpers on each kind of target (SQLAlchemy sync and async, psycopg sync and async)."""

from __future__ import annotations

import asyncio
import json
import types
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.orm import Session

from app.auth import mint_token
from app.config import Settings
from switchboard_client import outbox
from tests.docs_examples import example
from tests.outbox.harness import instance, pending
from tests.outbox.postgres import PostgresServer
from tests.support import ROOT, TEST_SECRET, RedisServer, recv_json, running, wait_until, ws_connect


def module(page: str, name: str) -> types.ModuleType:
    found = types.ModuleType(name.replace("-", "_"))
    exec(compile(example(page, name), f"{page}#{name}", "exec"), found.__dict__)
    return found


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'switchboard%'").fetchall()
    return {name for (name,) in rows}


def test_the_shipped_migration_is_the_helpers_ddl() -> None:
    assert (ROOT / "deploy" / "outbox" / "0001_switchboard_outbox.sql").read_text() == outbox.DDL


def test_the_alembic_migration_upgrades_and_downgrades(postgres: PostgresServer) -> None:
    url = postgres.create_database("alembic")
    migration = module("docs/outbox.md", "alembic")
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    for step, expected in (
        (migration.upgrade, {"switchboard_outbox", "switchboard_outbox_dead"}),
        (migration.downgrade, set()),
    ):
        with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
            step()
        assert tables(url) == expected
    engine.dispose()


def test_the_helpers_write_in_the_callers_transaction(outbox_url: str) -> None:
    engine = sqlalchemy.create_engine(outbox_url.replace("postgresql://", "postgresql+psycopg://"))
    with Session(engine) as session, session.begin():
        assert outbox.publish(session, "news:a", {"n": 1}, key="k-1") is None
    with Session(engine) as session:
        outbox.publish(session, "news:a", {"n": 2})
        session.rollback()  # never written
    with engine.begin() as conn:
        outbox.publish(conn, "news:a", {"n": 3}, partition=7)
    engine.dispose()

    async def async_targets() -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        aengine = create_async_engine(outbox_url.replace("postgresql://", "postgresql+psycopg://"))
        async with aengine.begin() as conn:
            await outbox.publish(conn, "news:a", {"n": 4})
        await aengine.dispose()
        async with await psycopg.AsyncConnection.connect(outbox_url) as aconn:
            await outbox.publish(aconn, "news:a", {"n": 5})

    asyncio.run(async_targets())
    with psycopg.connect(outbox_url) as pconn:
        with pconn.cursor() as cur:  # a DB-API cursor, as Django's connection.cursor() is
            outbox.publish(cur, "news:a", {"n": 6})
        rows = pconn.execute(
            "SELECT data, idempotency_key, partition, lane FROM switchboard_outbox ORDER BY id"
        ).fetchall()
    assert rows == [
        ({"n": 1}, "k-1", None, "c:news:a"),
        ({"n": 3}, None, 7, "p:7"),
        ({"n": 4}, None, None, "c:news:a"),
        ({"n": 5}, None, None, "c:news:a"),
        ({"n": 6}, None, None, "c:news:a"),
    ]
    with pytest.raises(ValueError, match="JSON compliant"):
        outbox.publish(None, "news:a", float("nan"))  # JSONB cannot hold it: refused before any SQL


def test_the_psycopg_example_ships_in_one_transaction(outbox_url: str) -> None:
    ship = module("docs/outbox.md", "psycopg").ship
    with psycopg.connect(outbox_url) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer text, status text)")
        conn.execute("INSERT INTO orders VALUES (1, '42', 'paid')")
        conn.commit()
        ship(conn, 1)
        with pytest.raises(TypeError):
            ship(conn, 2)  # no such order: the transaction rolls back, and so does its news
        assert conn.execute("SELECT channel, data FROM switchboard_outbox").fetchall() == [
            ("orders:#42", {"order": 1, "status": "shipped"})
        ]


def test_the_fastapi_outbox_example_ships_an_order_once(
    tmp_path: Path, outbox_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(outbox_url) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer text, status text)")
        conn.execute("INSERT INTO orders VALUES (1, '42', 'paid')")
    monkeypatch.setenv("DATABASE_URL", outbox_url.replace("postgresql://", "postgresql+psycopg://"))
    shop = module("docs/server-api.md", "fastapi")
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with running(instance("relay", tmp_path, redis.url, outbox_url)) as (app,):
            asyncio.run(ship_order_one(shop, app.ws("/ws")))
            wait_until(lambda: pending(outbox_url) == 0, 10, "the outbox to empty")
    finally:
        redis.stop()
    with psycopg.connect(outbox_url) as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 1").fetchone() == ("shipped",)


async def ship_order_one(shop: types.ModuleType, ws_url: str) -> None:
    token = mint_token(Settings(jwt_secret=TEST_SECRET), "42", "Customer", 600)
    async with ws_connect(ws_url) as ws:
        await ws.send(json.dumps({"id": 1, "op": "connect", "token": token}))
        assert (await recv_json(ws))["ok"] is True
        await ws.send(json.dumps({"id": 2, "op": "subscribe", "channel": "orders:#42"}))
        assert (await recv_json(ws))["ok"] is True
        transport = httpx.ASGITransport(app=shop.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            for _ in range(2):  # a retried request publishes once
                response = await client.post("/orders/1/ship")
                assert response.status_code == 200, response.text
                assert response.json() == {"status": "shipped"}
            assert (await client.post("/orders/2/ship")).status_code == 404
        push = await recv_json(ws)
        assert (push["op"], push["channel"], push["data"]) == ("pub", "orders:#42", {"order": 1, "status": "shipped"})
        with pytest.raises(TimeoutError):
            await recv_json(ws, timeout=0.5)
    await shop.engine.dispose()
