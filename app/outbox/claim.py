"""One claiming transaction: lock some lanes, read their oldest rows, publish them in order, then
delete the published rows and move the dead ones, all before the commit.

A crash anywhere before the commit leaves every row where it was, claimable at once (the locks go
with the connection); a row that was published is published again by the next claim, and that
second publish is absorbed by its idempotency record (the row's id, or the row's own key).

With tracing on (app/tracing.py), a claim that claimed rows is one ``outbox relay`` span, from its
first query to its commit, and each row's ``publish`` span is its child (the lanes' tasks inherit
the current span), so the trace goes on to the ``deliver`` spans of the receiving instances. An
empty claim, what every idle poll is, starts no span: an idle relay sends no traces at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection

from app import tracing
from app.api_methods import ApiError
from app.errors import ProtocolError
from app.outbox import queries

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from opentelemetry.trace import Span

log = logging.getLogger("switchboard.outbox")


@dataclass(slots=True)
class Row:
    id: int
    channel: str
    data: Any
    key: str | None  # the row's own idempotency key, if it has one
    lane: str
    born: int  # created_at in microseconds: with the id, it tells this row from an earlier one of that id


# Publishes one row's data to its channel under the row's idempotency key; raises ApiError or
# ProtocolError for a row that can never be published, BrokerUnavailable to try again later.
Publish = Callable[[Row], Awaitable[object]]


@dataclass(slots=True)
class Outcome:
    """What one claim did. ``retry`` says a lane stopped early: try again after a back-off."""

    claimed: int = 0
    delivered: list[int] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)
    retry: BaseException | None = None


async def claim(conn: AsyncConnection[Any], publish: Publish, batch: int) -> Outcome:
    """Relay at most ``batch`` rows in one transaction on ``conn`` (an autocommit connection)."""
    outcome = Outcome()
    # The span, when there is one, starts once rows are claimed (an empty claim makes none), is
    # backdated to the claim's start, and closes outside the transaction: it covers the commit,
    # and records a failed one (the rows are then relayed again).
    started = time.time_ns() if tracing.ON else 0
    with contextlib.ExitStack() as traced:
        async with conn.transaction():
            lanes = await _lock_lanes(conn, batch)
            if not lanes:
                return outcome
            cur = await conn.execute(queries.CLAIM_ROWS, {"lanes": lanes, "limit": batch})
            rows = [Row(*record) for record in await cur.fetchall()]
            outcome.claimed = len(rows)
            span = traced.enter_context(_span(len(lanes), len(rows), started)) if started and rows else None
            by_lane: dict[str, list[Row]] = {}
            for row in rows:
                by_lane.setdefault(row.lane, []).append(row)
            # Lanes in parallel, each lane's rows one after another: its order is the publish order.
            await asyncio.gather(*(_relay_lane(lane_rows, publish, outcome) for lane_rows in by_lane.values()))
            if outcome.delivered:
                await conn.execute(queries.DELETE_DELIVERED, {"ids": outcome.delivered})
            if outcome.dead:
                ids, reasons = zip(*outcome.dead, strict=True)
                await conn.execute(queries.MOVE_DEAD, {"ids": list(ids), "reasons": list(reasons)})
            if span is not None:
                _describe(span, outcome)
    return outcome


def _span(lanes: int, rows: int, started: int) -> contextlib.AbstractContextManager[Span | None]:
    """Counts only: never the DSN (a secret), nor a row's channel or data (one span, many rows)."""
    attributes = {"db.system.name": "postgresql", "switchboard.outbox.lanes": lanes, "switchboard.outbox.claimed": rows}
    return tracing.span("outbox relay", "consumer", attributes, start_ns=started)


def _describe(span: Span, outcome: Outcome) -> None:
    span.set_attribute("switchboard.outbox.delivered", len(outcome.delivered))
    span.set_attribute("switchboard.outbox.dead_lettered", len(outcome.dead))
    if outcome.retry is not None:
        # The rows behind the error stay for a later claim; the exception itself is recorded on
        # the publish span it left (a broker error). Only its type here: a message may name a host.
        left = outcome.claimed - len(outcome.delivered) - len(outcome.dead)
        span.set_attribute("switchboard.outbox.retried", left)
        span.set_attribute("error.type", type(outcome.retry).__name__)
        tracing.set_error(span)


async def _lock_lanes(conn: AsyncConnection[Any], batch: int) -> list[str]:
    cur = await conn.execute(queries.LOCK_LANES, {"scan": batch, "space": queries.LOCK_SPACE})
    return [lane for (lane,) in await cur.fetchall()]


async def _relay_lane(rows: list[Row], publish: Publish, outcome: Outcome) -> None:
    for row in rows:
        try:
            await publish(row)
        except (ApiError, ProtocolError) as exc:
            # Never publishable: set aside with the reason, and the lane goes on behind it.
            reason = f"{int(exc.code)} {exc.message}"
            log.warning("outbox row %d dead-lettered: %r", row.id, reason)
            outcome.dead.append((row.id, reason))
        except Exception as exc:  # kept for the retry; the lane stops here
            outcome.retry = exc
            return
        else:
            outcome.delivered.append(row.id)
