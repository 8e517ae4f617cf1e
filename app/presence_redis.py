"""Presence in Redis: one sorted set per channel, member -> expiry (Redis's own clock).

Each instance refreshes its local members every TTL/3, so instances need not agree on the time,
and a crashed instance's members stop counting within the TTL. Counting reads only members whose
expiry is ahead; removing expired ones is the sweeper's job alone (``sweep``, one instance at a
time), so every leave of a dead instance's member is seen, and announced, exactly once.

The keys and scripts are in ``app/presence_scripts.py``. The expiry index
(``switchboard:presence-expiries``: channel -> earliest member expiry) lists the channels that
have members, for the server API's ``channels``, and tells the sweeper which channels may hold an
expired member: a pass reads the channels due, not every channel. Each write of it is a lower
bound of the channel's earliest expiry (expiries only move later while a channel has members),
so a channel is never swept late, only at worst once early.

Rolling upgrade from a version with ``switchboard:presence-channels`` (a set) and no users hash:
counts are shared, but each version's sweeper sees only its own version's channels (a dead
instance's members still stop counting within the TTL, their leave may go unannounced), ``channels``
lists only what this version indexed, and ``presence_stats.users`` leaves out the old version's
members. All of it is right again once every instance runs this version.

Rolling upgrade from a version that did not count anonymous members (the users hash's ``""``
field): an older instance's ``presence_stats.users`` counts that field as one more user, and the
anonymous members it added count as clients only; right again once every instance runs this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from app import metrics
from app.broker import BrokerUnavailable
from app.broker.redis_target import RedisClient
from app.presence import Cursor, cut
from app.presence_scripts import COUNT, DUE, EXPIRIES, FORGET, LIST, PAGE, REMOVE, STATS, SWEEP, TOUCH, key, users_key

log = logging.getLogger("switchboard.presence")

REFRESH_BATCH = 500
# Channels per ZADD to the expiry index, and due channels per sweep pass.
INDEX_BATCH = 500
DUE_BATCH = 1000
_TRANSIENT = (RedisError, OSError)


class RedisPresence:
    def __init__(self, client: RedisClient, ttl: float) -> None:
        self._client = client
        self._ttl = ttl
        self._touch = client.register_script(TOUCH)
        self._count = client.register_script(COUNT)
        self._remove = client.register_script(REMOVE)
        self._list = client.register_script(LIST)
        self._page = client.register_script(PAGE)
        self._stats = client.register_script(STATS)
        self._sweep = client.register_script(SWEEP)
        self._due = client.register_script(DUE)
        self._forget = client.register_script(FORGET)
        self._local: dict[str, set[str]] = {}
        self._joining: dict[
            str, list[tuple[str, asyncio.Future[int]]]
        ] = {}  # per channel: joins waiting for its next batch
        self._batches: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_loop(), name="switchboard-presence")

    async def close(self) -> None:
        for task in (self._refresher, *self._batches):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for batch in self._joining.values():
            for _, joined in batch:
                joined.cancel()
        # Best effort: remove our members now rather than leaving them to the TTL.
        with contextlib.suppress(*_TRANSIENT):
            for channel, members in self._local.items():
                await self._remove(keys=_keys(channel), args=list(members))
        self._local.clear()

    async def join(self, channel: str, member: str) -> int:
        """Joins to a channel are batched: those that arrive while its previous batch is in Redis
        share the next script call and SADD. A handshake storm then costs one round trip per
        channel per batch rather than two per socket. Each joiner is told the count with its whole
        batch in."""
        joining = self._joining.get(channel)
        if joining is None:
            joining = self._joining[channel] = []
            task = asyncio.create_task(self._join_loop(channel))  # runs after this tick's joins
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        joined: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        joining.append((member, joined))
        return await joined

    async def _join_loop(self, channel: str) -> None:
        while batch := self._joining[channel]:
            self._joining[channel] = []
            await self._join_batch(channel, batch)
        del self._joining[channel]

    async def _join_batch(self, channel: str, batch: list[tuple[str, asyncio.Future[int]]]) -> None:
        members = [member for member, _ in batch]
        try:
            count, earliest = await self._touch(keys=_keys(channel), args=[self._ttl, *members])
            count = int(count)
            await self._client.zadd(EXPIRIES, {channel: _score(earliest)})
        except asyncio.CancelledError:
            for _, joined in batch:
                joined.cancel()
            raise
        except Exception as exc:
            error = BrokerUnavailable(str(exc)) if isinstance(exc, _TRANSIENT) else exc
            for _, joined in batch:
                if not joined.done():
                    joined.set_exception(error)
            return
        gone = []
        for member, joined in batch:
            if joined.done():  # its joiner was cancelled: it must not stay, nor be refreshed
                gone.append(member)
                continue
            # Only after Redis has it: a failed join must not be resurrected by the refresher.
            self._local.setdefault(channel, set()).add(member)
            joined.set_result(count)
        for member in gone:
            with contextlib.suppress(*_TRANSIENT):
                await self._remove(keys=_keys(channel), args=[member])

    async def leave(self, channel: str, member: str) -> int:
        members = self._local.get(channel)
        if members is not None:
            members.discard(member)
            if not members:
                del self._local[channel]
        try:
            return int(await self._remove(keys=_keys(channel), args=[member]))
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def count(self, channel: str) -> int:
        try:
            return int(await self._count(keys=[key(channel)]))
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def stats(self, channel: str, anonymous: bool = False) -> dict[str, int]:
        try:
            clients, users, anonymous_clients = await self._stats(keys=_keys(channel))
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        found = {"clients": int(clients), "users": int(users)}
        return {**found, "anonymous": int(anonymous_clients)} if anonymous else found

    async def members(self, channel: str) -> list[str]:
        try:
            found = await self._list(keys=[key(channel)])
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return [_text(m) for m in found]

    async def page(self, channel: str, cursor: Cursor, limit: int) -> tuple[list[str], Cursor | None]:
        scan, skip = cursor
        try:
            following, found = await self._page(keys=[key(channel)], args=[scan, limit])
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        # ZSCAN may return more than asked (a small set comes whole): cut it, and come back for
        # the rest of this batch before moving on.
        return cut([_text(m) for m in found], skip, limit, scan, int(following))

    async def channels(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        found: list[tuple[str, int]] = []
        try:
            async for raw, _ in self._client.zscan_iter(EXPIRIES, match=pattern, count=1000):
                channel = _text(raw)
                count = int(await self._count(keys=[key(channel)]))
                if count:
                    found.append((channel, count))
                    if len(found) >= limit:
                        break
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return sorted(found)

    async def sweep(self) -> list[tuple[str, list[str], int]]:
        """Sweep the channels due in the expiry index: one read when none are."""
        swept = []
        try:
            now, due = await self._due(keys=[EXPIRIES], args=[DUE_BATCH])
            metrics.PRESENCE_SWEEP_LAG.set(sweep_lag(float(now), due[1::2]))
            for raw, score in zip(due[::2], due[1::2], strict=True):
                channel = _text(raw)
                gone, left, earliest = await self._sweep(keys=_keys(channel))
                if gone:
                    swept.append((channel, [_text(m) for m in gone], int(left)))
                if int(left):
                    await self._client.zadd(EXPIRIES, {channel: _score(earliest)})
                else:
                    await self._forget(keys=[EXPIRIES], args=[raw, score])
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return swept

    async def _refresh(self) -> None:
        """Every local member's expiry moves on, and the expiry index learns each channel's
        earliest: a script call per channel (pipelined, ``INDEX_BATCH`` at a time, on one Redis
        server), and one index write per batch."""
        work = [
            (channel, batch[i : i + REFRESH_BATCH])
            for channel, members in tuple(self._local.items())
            for batch in (tuple(members),)
            for i in range(0, len(batch), REFRESH_BATCH)
        ]
        for start in range(0, len(work), INDEX_BATCH):
            chunk = work[start : start + INDEX_BATCH]
            touched = await self._touch_all(chunk)
            earliest = {channel: _score(first) for (channel, _), (_, first) in zip(chunk, touched, strict=True)}
            await self._client.zadd(EXPIRIES, earliest)
            # A member that left while its touch was on the way may have been put back after its
            # leave's removal: remove it again (removal is idempotent), or it would linger a TTL
            # and be announced as leaving a second time.
            for channel, members in chunk:
                here = self._local.get(channel, ())
                if gone := [m for m in members if m not in here]:
                    await self._remove(keys=_keys(channel), args=gone)

    async def _touch_all(self, work: list[tuple[str, tuple[str, ...]]]) -> list[Any]:
        if isinstance(self._client, RedisCluster):
            # A cluster pipeline's scripts go by redis-py's own loading, which app/broker/cluster.py
            # avoids: one call each, on the shard that owns the channel.
            return [await self._touch(keys=_keys(channel), args=[self._ttl, *members]) for channel, members in work]
        # Pipelined: an idle channel costs its instance a few microseconds per round, not a round trip.
        async with self._client.pipeline(transaction=False) as pipe:
            for channel, members in work:
                await self._touch(keys=_keys(channel), args=[self._ttl, *members], client=pipe)
            found: list[Any] = await pipe.execute()
        return found

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis down: counts go stale until it returns; the next round re-adds everyone.
                metrics.LISTENER_ERRORS.inc()
                log.warning("presence refresh failed: %s", exc)


def _keys(channel: str) -> list[str]:
    return [key(channel), users_key(channel)]


def sweep_lag(now: float, scores: list[bytes]) -> float:
    """How long ago the oldest channel due was due: the sweep's backlog, about a round when healthy.

    Scores come in ascending order; 0 is an emptied channel's (due at once, forgotten by this pass),
    not an expiry, so it says nothing about lag.
    """
    oldest = next((float(s) for s in scores if float(s) > 0), None)
    return max(0.0, now - oldest) if oldest is not None else 0.0


def _score(earliest: bytes | str) -> float:
    """An expiry index score; 0 (due now: the sweeper looks and forgets it) if the set was empty."""
    return float(earliest) if earliest else 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
