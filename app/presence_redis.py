"""Presence in Redis: one sorted set per channel, member -> expiry (Redis's own clock).

Each instance refreshes its local members every TTL/3, so instances need not agree on the time,
and a crashed instance's members stop counting within the TTL. Counting reads only members whose
expiry is ahead; removing expired ones is the sweeper's job alone (``sweep``, one instance at a
time), so every leave of a dead instance's member is seen, and announced, exactly once.

``switchboard:presence-channels`` indexes the channels that have members, for the sweeper and the
server API's ``channels``. It is a separate command, not in the scripts, so each script touches
one key (one Redis Cluster slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from app import metrics
from app.broker import BrokerUnavailable
from app.broker.redis_target import RedisClient
from app.presence import Cursor, cut

log = logging.getLogger("switchboard.presence")

KEY_PREFIX = "switchboard:presence:"


def key(channel: str) -> str:
    """A channel's presence set, hash-tagged like its history: on Redis Cluster, one shard holds
    everything about a channel."""
    return f"{KEY_PREFIX}{{{channel}}}"


INDEX = "switchboard:presence-channels"
REFRESH_BATCH = 500
_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
# KEYS[1] = set, ARGV[1] = ttl seconds, ARGV[2..] = members to add (none for a plain count).
_TOUCH = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 2000)) end
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
)
# KEYS[1] = set, ARGV[1] = member to remove.
_REMOVE = _NOW + "redis.call('ZREM', KEYS[1], ARGV[1])\nreturn redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')\n"
# KEYS[1] = set: the members whose expiry is still ahead.
_LIST = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')\n"
# KEYS[1] = set, ARGV = cursor, count: {next cursor, live members of this batch}.
_PAGE = (
    _NOW
    + """
local found = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local live = {}
for i = 1, #found[2], 2 do
  if tonumber(found[2][i + 1]) > now then live[#live + 1] = found[2][i] end
end
return {found[1], live}
"""
)
# KEYS[1] = set: {members whose expiry passed (now removed), members left}.
_SWEEP = (
    _NOW
    + """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
return {gone, redis.call('ZCARD', KEYS[1])}
"""
)
_TRANSIENT = (RedisError, OSError)


class RedisPresence:
    def __init__(self, client: RedisClient, ttl: float) -> None:
        self._client = client
        self._ttl = ttl
        self._touch = client.register_script(_TOUCH)
        self._remove = client.register_script(_REMOVE)
        self._list = client.register_script(_LIST)
        self._page = client.register_script(_PAGE)
        self._sweep = client.register_script(_SWEEP)
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
                await self._client.zrem(key(channel), *members)
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
            count = int(await self._touch(keys=[key(channel)], args=[self._ttl, *members]))
            await self._client.sadd(INDEX, channel)
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
                await self._remove(keys=[key(channel)], args=[member])

    async def leave(self, channel: str, member: str) -> int:
        members = self._local.get(channel)
        if members is not None:
            members.discard(member)
            if not members:
                del self._local[channel]
        try:
            return int(await self._remove(keys=[key(channel)], args=[member]))
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def count(self, channel: str) -> int:
        try:
            return int(await self._touch(keys=[key(channel)], args=[self._ttl]))
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc

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
            async for raw in self._client.sscan_iter(INDEX, match=pattern, count=1000):
                channel = _text(raw)
                count = int(await self._touch(keys=[key(channel)], args=[self._ttl]))
                if count:
                    found.append((channel, count))
                    if len(found) >= limit:
                        break
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return sorted(found)

    async def sweep(self) -> list[tuple[str, list[str], int]]:
        swept = []
        try:
            async for raw in self._client.sscan_iter(INDEX, count=1000):
                channel = _text(raw)
                gone, left = await self._sweep(keys=[key(channel)])
                if gone:
                    swept.append((channel, [_text(m) for m in gone], int(left)))
                if not int(left):
                    await self._client.srem(INDEX, channel)
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return swept

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                for channel, members in tuple(self._local.items()):
                    batch = tuple(members)
                    for i in range(0, len(batch), REFRESH_BATCH):
                        await self._touch(keys=[key(channel)], args=[self._ttl, *batch[i : i + REFRESH_BATCH]])
                    await self._client.sadd(INDEX, channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis down: counts go stale until it returns; the next round re-adds everyone.
                metrics.LISTENER_ERRORS.inc()
                log.warning("presence refresh failed: %s", exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
