"""The relay: a background loop per instance that delivers committed outbox rows.

It claims batches (app/outbox/claim.py) until the table is empty, then sleeps until a NOTIFY on
``switchboard_outbox`` (the table's trigger fires one at each commit that added rows) or the poll
interval, whichever comes first: a NOTIFY sent while the listener was disconnected is lost, the
poll is not. Errors (PostgreSQL or Redis down, anything unexpected) are logged and counted, and
the loop backs off (at most SWITCHBOARD_OUTBOX_RETRY_MAX) and goes on; rows wait meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from app import metrics
from app.api_methods import publish_data
from app.outbox import queries
from app.outbox.claim import Row, claim
from app.services import Services
from app.session import SERVER_PUBLISHER, idempotency_key_of

log = logging.getLogger("switchboard.outbox")

FIRST_BACKOFF = 0.1
BACKLOG_EVERY = 2.0  # seconds between samples of the pending-rows gauges
# The idempotency scope of a row without a key of its own (app/session.py names the others: "s"
# the server API, "u..." a user, "c..." an anonymous connection). A scope of its own, so that no
# server API key can take a row's; and the key holds the row's creation time beside its id, so
# that ids that start again (a restored or recreated table) are not taken for rows relayed before.
OUTBOX_PUBLISHER = "o"


def where(dsn: str) -> str:
    """The DSN without its secrets, for logs: host, port and database only."""
    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # an unparsable DSN is reported by the connection attempt
        return "(unparsable DSN)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def claim_options(dsn: str, timeout_ms: int) -> str:
    """The claim connections' ``options``: the DSN's own (a ``search_path``, say), then the claim
    timeout. A keyword argument replaces the DSN's value, so they are joined here; a later ``-c``
    of the same setting wins, so the DSN cannot lift the timeout by accident."""
    try:
        given = conninfo_to_dict(dsn).get("options") or ""
    except Exception:  # an unparsable DSN is reported by the connection attempt
        given = ""
    return f"{given} -c idle_in_transaction_session_timeout={timeout_ms}".strip()


class Relay:
    def __init__(self, services: Services) -> None:
        settings = services.settings
        assert settings.outbox_url is not None
        self._services = services
        self._dsn = settings.outbox_url.get_secret_value()
        self._batch = settings.outbox_batch_size
        self._poll = settings.outbox_poll_interval
        self._retry_max = settings.outbox_retry_max
        # Each claim's connection: a relay that hangs mid-claim (stopped, partitioned away) loses
        # its lanes to the others once PostgreSQL gives up on it.
        timeout_ms = int(settings.outbox_claim_timeout * 1000)
        self._options = claim_options(self._dsn, timeout_ms)
        self._wake = asyncio.Event()
        self._backlog_at = 0.0

    async def _publish(self, row: Row) -> object:
        if row.key is not None:  # the row's own key: shared with the server API's, as documented
            key = idempotency_key_of(row.key, SERVER_PUBLISHER)
        else:
            key = f"{OUTBOX_PUBLISHER}:{row.id}.{row.born}"
        return await publish_data(self._services, row.channel, row.data, key)

    async def run(self) -> None:
        log.info("outbox relay on %s", where(self._dsn))
        pool = AsyncConnectionPool(
            self._dsn,
            min_size=1,
            max_size=1,  # one claim at a time; the listener has a connection of its own
            kwargs={"autocommit": True, "options": self._options},
            open=False,
            name="switchboard-outbox",
        )
        await pool.open(wait=False)
        listener = asyncio.create_task(self._listen(), name="switchboard-outbox-listen")
        try:
            await self._relay(pool)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await pool.close()

    async def _relay(self, pool: AsyncConnectionPool[Any]) -> None:
        backoff = FIRST_BACKOFF
        while True:
            try:
                self._wake.clear()
                async with pool.connection() as conn:
                    outcome = await claim(conn, self._publish, self._batch)
                    await self._sample_backlog(conn)
                metrics.OUTBOX_DELIVERED.inc(len(outcome.delivered))
                metrics.OUTBOX_DEAD.inc(len(outcome.dead))
                if outcome.retry is not None:
                    raise outcome.retry
                backoff = FIRST_BACKOFF
                if outcome.claimed:
                    continue  # more may be waiting: claim again at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # logged, counted, retried: the loop keeps running
                metrics.OUTBOX_ERRORS.inc()
                log.warning("outbox relay: %s: %s; retrying in %.1f s", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._retry_max)

    async def _sample_backlog(self, conn: AsyncConnection[Any]) -> None:
        now = time.monotonic()
        if now - self._backlog_at < BACKLOG_EVERY:
            return
        self._backlog_at = now
        cur = await conn.execute(queries.BACKLOG)
        found = await cur.fetchone()
        if found is not None:
            metrics.OUTBOX_PENDING.set(found[0])
            metrics.OUTBOX_OLDEST.set(found[1])

    async def _listen(self) -> None:
        """Sets the wake-up event on each NOTIFY; reconnects (and wakes: rows may have come
        meanwhile) after a lost connection."""
        backoff = FIRST_BACKOFF
        while True:
            try:
                async with await AsyncConnection.connect(self._dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {queries.NOTIFY_CHANNEL}")
                    self._wake.set()
                    backoff = FIRST_BACKOFF
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll covers for the listener meanwhile
                metrics.OUTBOX_ERRORS.inc()
                log.warning("outbox listener: %s; reconnecting in %.1f s", type(exc).__name__, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._retry_max)
