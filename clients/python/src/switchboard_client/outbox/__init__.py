"""Publish inside your database transaction: ``outbox.publish(session, channel, data)``.

The row is added to ``switchboard_outbox`` in the caller's transaction, so the message commits or
rolls back with the data; a Switchboard instance with ``SWITCHBOARD_OUTBOX_URL`` delivers each
committed row once (docs/outbox.md). Install with ``pip install switchboard-client[outbox]``.

``target`` may be:
  - a SQLAlchemy ``Session`` or ``Connection``: the row is added now;
  - a SQLAlchemy ``AsyncSession`` or ``AsyncConnection``: ``await`` the call;
  - a psycopg ``Connection`` or ``Cursor`` (or any DB-API cursor with ``%s`` parameters, such as
    Django's ``connection.cursor()``): added now; an ``AsyncConnection`` or ``AsyncCursor``: awaited.

Nothing here imports SQLAlchemy or psycopg: the target brings its own.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeAlias, overload

from switchboard_client.outbox.schema import DDL

if TYPE_CHECKING:  # only for the types: nothing imports these at run time
    import psycopg
    from sqlalchemy.ext import asyncio as sa_asyncio

    AsyncTarget: TypeAlias = (
        "sa_asyncio.AsyncSession | sa_asyncio.AsyncConnection | psycopg.AsyncConnection[Any] | psycopg.AsyncCursor[Any]"
    )

__all__ = ["DDL", "publish"]

# DB-API (psycopg, Django) and SQLAlchemy spell parameters differently; the statement is the same.
_COLUMNS = "INSERT INTO switchboard_outbox (channel, data, idempotency_key, partition)"
DBAPI_INSERT = _COLUMNS + " VALUES (%s, %s::jsonb, %s, %s)"
SQLALCHEMY_INSERT = _COLUMNS + " VALUES (:channel, CAST(:data AS jsonb), :key, :partition)"


def encode(data: Any) -> str:
    """JSON for the ``data`` column. NaN and infinities are refused here: JSONB has no spelling
    for them, and the error is clearer now than at commit."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@overload
def publish(
    target: AsyncTarget, channel: str, data: Any, key: str | None = None, *, partition: int | None = None
) -> Awaitable[None]: ...


@overload
def publish(target: Any, channel: str, data: Any, key: str | None = None, *, partition: int | None = None) -> None: ...


def publish(
    target: Any, channel: str, data: Any, key: str | None = None, *, partition: int | None = None
) -> Awaitable[None] | None:
    """Add one outbox row in ``target``'s transaction. Returns an awaitable for async targets.

    ``key`` is the idempotency key the relay publishes with (default ``outbox:<id>``): give one
    when the same news may also be published another way, so that only one of them lands.
    ``partition``: rows that share it are delivered in order across their channels.
    """
    payload = encode(data)
    if type(target).__module__.startswith("sqlalchemy"):
        from sqlalchemy import text  # the caller has SQLAlchemy: it gave us a session

        params = {"channel": channel, "data": payload, "key": key, "partition": partition}
        result = target.execute(text(SQLALCHEMY_INSERT), params)
    else:
        result = target.execute(DBAPI_INSERT, (channel, payload, key, partition))
    if inspect.isawaitable(result):
        return _done(result)
    return None


async def _done(result: Awaitable[Any]) -> None:
    await result
