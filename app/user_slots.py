"""User connection slots: how many connections each user holds, cluster-wide.

``SWITCHBOARD_USER_CONNECTION_LIMIT`` counts a user's connections in one Redis sorted set per user
(connection id -> expiry, Redis's clock). Each instance refreshes its own entries, so a dead
instance's slots free themselves within the presence TTL. ``app/users.py`` admits and releases;
this module is the storage, and the epoch by which an instance learns that Redis lost it.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from redis.exceptions import RedisError

from app.broker import Broker, BrokerUnavailable, redis_client
from app.broker.redis_target import RedisClient

SLOTS_PREFIX = "switchboard:user:"
EPOCH = "switchboard:user-slots-epoch"
CHECK_SECONDS = 1.0
# Every live instance checks within CHECK_SECONDS of an epoch's birth; the rest is for its
# re-registration round trips and a busy event loop.
SETTLE_SECONDS = 2 * CHECK_SECONDS
# KEYS[1] = the epoch, ARGV[1] = an id for a new one: {its id, its age in ms}.
_EPOCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = redis.call('HMGET', KEYS[1], 'id', 'born')
if not found[1] then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'born', now)
  return {ARGV[1], 0}
end
return {found[1], now - tonumber(found[2])}
"""
# KEYS[1] = the user's set, ARGV = ttl seconds, connection id, limit. 1 if admitted.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 2000))
return 1
"""
# KEYS[1] = the user's set, ARGV = ttl seconds, connection ids to keep alive.
_KEEP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 2000))
return 1
"""


class Slots(Protocol):
    """How many connections each user holds, cluster-wide."""

    async def admit(self, user: str, client: str, limit: int) -> bool: ...

    async def release(self, user: str, client: str) -> None: ...

    async def keep(self, held: dict[str, set[str]]) -> None:
        """Refresh this instance's slots (called every TTL/3, and when the epoch changes)."""
        ...

    async def epoch(self, new: str) -> tuple[str, float]:
        """The slots' epoch (``new`` if there was none) and its age in seconds."""
        ...


class MemorySlots:
    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}

    async def admit(self, user: str, client: str, limit: int) -> bool:
        held = self._held.setdefault(user, set())
        if len(held) >= limit:
            return False
        held.add(client)
        return True

    async def release(self, user: str, client: str) -> None:
        held = self._held.get(user)
        if held is not None:
            held.discard(client)
            if not held:
                del self._held[user]

    async def keep(self, held: dict[str, set[str]]) -> None:
        pass

    async def epoch(self, new: str) -> tuple[str, float]:
        return "memory", float("inf")  # nothing to lose but the process itself


class RedisSlots:
    def __init__(self, client: RedisClient, ttl: float) -> None:
        self._client = client
        self._ttl = ttl
        self._admit = client.register_script(_ADMIT)
        self._keep = client.register_script(_KEEP)
        self._epoch = client.register_script(_EPOCH)

    async def admit(self, user: str, client: str, limit: int) -> bool:
        try:
            return bool(await self._admit(keys=[SLOTS_PREFIX + user], args=[self._ttl, client, limit]))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def release(self, user: str, client: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.zrem(SLOTS_PREFIX + user, client)

    async def keep(self, held: dict[str, set[str]]) -> None:
        try:
            for user, clients in tuple(held.items()):
                await self._keep(keys=[SLOTS_PREFIX + user], args=[self._ttl, *clients])
        except (RedisError, OSError) as exc:  # an admission waiting on this is told 108, not 1011
            raise BrokerUnavailable(str(exc)) from exc

    async def epoch(self, new: str) -> tuple[str, float]:
        try:
            found, age_ms = await self._epoch(keys=[EPOCH], args=[new])
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return (found.decode() if isinstance(found, bytes) else str(found)), int(age_ms) / 1000


def create_slots(broker: Broker, ttl: float) -> Slots:
    client = redis_client(broker)
    return RedisSlots(client, ttl) if client is not None else MemorySlots()
