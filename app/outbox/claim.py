"""One claiming transaction: lock some lanes, read their oldest rows, publish them in order, then
delete the published rows and move the dead ones, all before the commit.

A crash anywhere before the commit leaves every row where it was, claimable at once (the locks go
with the connection); a row that was published is published again by the next claim, and that
second publish is absorbed by its idempotency record (``outbox:<id>`` or the row's own key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from app.api_methods import ApiError
from app.errors import ProtocolError
from app.outbox import queries

log = logging.getLogger("switchboard.outbox")

# Publishes one row's data to its channel with the idempotency key; raises ApiError or
# ProtocolError for a row that can never be published, BrokerUnavailable to try again later.
Publish = Callable[[str, Any, str], Awaitable[object]]


@dataclass(slots=True)
class Row:
    id: int
    channel: str
    data: Any
    key: str | None
    lane: str


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
    async with conn.transaction():
        lanes = await _lock_lanes(conn, batch)
        if not lanes:
            return outcome
        cur = await conn.execute(queries.CLAIM_ROWS, {"lanes": lanes, "limit": batch})
        rows = [Row(*record) for record in await cur.fetchall()]
        outcome.claimed = len(rows)
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
    return outcome


async def _lock_lanes(conn: AsyncConnection[Any], batch: int) -> list[str]:
    cur = await conn.execute(queries.LOCK_LANES, {"scan": batch, "space": queries.LOCK_SPACE})
    return [lane for (lane,) in await cur.fetchall()]


async def _relay_lane(rows: list[Row], publish: Publish, outcome: Outcome) -> None:
    for row in rows:
        key = row.key if row.key is not None else f"outbox:{row.id}"
        try:
            await publish(row.channel, row.data, key)
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
