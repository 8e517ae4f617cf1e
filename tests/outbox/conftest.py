"""One private PostgreSQL for the outbox tests, a fresh database with the outbox table per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest

from switchboard_client.outbox import DDL
from tests.outbox.postgres import PostgresServer, available

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if not available():
        pytest.fail("PostgreSQL 15 is not installed: run `make deps`")
    server = PostgresServer().init().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def outbox_url(postgres: PostgresServer) -> str:
    """A new database with switchboard_outbox in it (the shipped DDL, applied as a user would)."""
    url = postgres.create_database(f"outbox{next(_databases)}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DDL)
    return url
