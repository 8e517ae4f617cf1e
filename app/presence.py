"""Cluster-wide presence: who is in a channel, counted across every instance.

Redis keeps one sorted set per channel, member -> expiry time (Redis's own clock, so instances
need not agree on the time). Each instance refreshes its local members every TTL/3; a crashed
instance stops refreshing and its members fall out of every count within the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app import metrics
from app.broker import Broker, BrokerUnavailable
from app.broker.redis import RedisBroker

log = logging.getLogger("switchboard.presence")

KEY_PREFIX = "switchboard:presence:"
REFRESH_BATCH = 500

# KEYS[1] = set, ARGV[1] = ttl seconds, ARGV[2..] = members to add (none for a plain count).
_TOUCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 2000)) end
return redis.call('ZCARD', KEYS[1])
"""
# KEYS[1] = set: the members whose expiry is still ahead, by Redis's clock.
_LIST = """
local t = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (tonumber(t[1]) + tonumber(t[2]) / 1e6), '+inf')
"""
# KEYS[1] = set, ARGV[1] = member to remove.
_REMOVE = """
local t = redis.call('TIME')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1e6)
return redis.call('ZCARD', KEYS[1])
"""


class Presence(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def join(self, channel: str, member: str) -> int:
        """Add a member; returns the cluster-wide count including it."""
        ...

    async def leave(self, channel: str, member: str) -> int:
        """Remove a member; returns the remaining cluster-wide count."""
        ...

    async def count(self, channel: str) -> int: ...

    async def members(self, channel: str) -> list[str]:
        """Every live member, across instances (``member`` strings as joined)."""
        ...


def member_id(client: str, user: str, info: dict[str, Any] | None) -> str:
    """A presence member: who is there, as ``presence`` lists them. Unique per connection."""
    return orjson.dumps([client, user, info]).decode()


def parse_member(member: str | bytes) -> dict[str, Any]:
    """``{"client","user","info"}`` from a member string; members from older versions are bare ids."""
    try:
        client, user, info = orjson.loads(member)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        client = member.decode() if isinstance(member, bytes) else member
        user, info = "", None
    return {"client": client, "user": user, "info": info}


def stats(members: list[str]) -> dict[str, int]:
    """``clients`` and distinct signed-in ``users`` (anonymous clients count as clients only)."""
    users = {m["user"] for m in map(parse_member, members) if m["user"]}
    return {"clients": len(members), "users": len(users)}


class MemoryPresence:
    def __init__(self) -> None:
        self._members: defaultdict[str, set[str]] = defaultdict(set)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._members.clear()

    async def join(self, channel: str, member: str) -> int:
        self._members[channel].add(member)
        return len(self._members[channel])

    async def count(self, channel: str) -> int:
        return len(self._members.get(channel, ()))

    async def members(self, channel: str) -> list[str]:
        return list(self._members.get(channel, ()))

    async def leave(self, channel: str, member: str) -> int:
        members = self._members.get(channel)
        if members is None:
            return 0
        members.discard(member)
        if not members:
            del self._members[channel]
        return len(members)


class RedisPresence:
    def __init__(self, client: Redis, ttl: float) -> None:
        self._client = client
        self._ttl = ttl
        self._touch = client.register_script(_TOUCH)
        self._remove = client.register_script(_REMOVE)
        self._list = client.register_script(_LIST)
        self._local: defaultdict[str, set[str]] = defaultdict(set)
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_loop(), name="switchboard-presence")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        # Best effort: remove our members now rather than leaving them to the TTL.
        with contextlib.suppress(RedisError, OSError):
            for channel, members in self._local.items():
                await self._client.zrem(KEY_PREFIX + channel, *members)
        self._local.clear()

    async def join(self, channel: str, member: str) -> int:
        try:
            count = int(await self._touch(keys=[KEY_PREFIX + channel], args=[self._ttl, member]))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc
        # Only after Redis has it: a failed join must not be resurrected by the refresher.
        self._local[channel].add(member)
        return count

    async def leave(self, channel: str, member: str) -> int:
        members = self._local.get(channel)
        if members is not None:
            members.discard(member)
            if not members:
                del self._local[channel]
        try:
            return int(await self._remove(keys=[KEY_PREFIX + channel], args=[member]))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def count(self, channel: str) -> int:
        try:
            return int(await self._touch(keys=[KEY_PREFIX + channel], args=[self._ttl]))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def members(self, channel: str) -> list[str]:
        try:
            found = await self._list(keys=[KEY_PREFIX + channel])
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return [m.decode() if isinstance(m, bytes) else str(m) for m in found]

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                for channel, members in tuple(self._local.items()):
                    batch = tuple(members)
                    for i in range(0, len(batch), REFRESH_BATCH):
                        await self._touch(keys=[KEY_PREFIX + channel], args=[self._ttl, *batch[i : i + REFRESH_BATCH]])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis down: counts go stale until it returns; the next round re-adds everyone.
                metrics.LISTENER_ERRORS.inc()
                log.warning("presence refresh failed: %s", exc)


def create_presence(broker: Broker, ttl: float) -> Presence:
    if isinstance(broker, RedisBroker):
        return RedisPresence(broker.client, ttl)
    return MemoryPresence()
