"""Which instances are alive, with their connection counts: the server API's ``info``.

An entry is what ``Services.instance_stats`` said at its last heartbeat (at most TTL/3 old).

Each instance writes its own entry in one Redis hash every TTL/3, stamped with an expiry on
Redis's clock; ``list`` returns the unexpired ones and drops the rest. With the memory broker the
process is the whole cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from app import __version__, metrics
from app.broker import BrokerUnavailable
from app.broker.redis_target import RedisClient

log = logging.getLogger("switchboard.instances")

KEY = "switchboard:instances"
# KEYS[1] = hash, ARGV = instance id, entry JSON (without "expires"), ttl seconds.
_BEAT = """
local t = redis.call('TIME')
local expires = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.3f', expires) .. ' ' .. ARGV[2])
return 1
"""
# KEYS[1] = hash: the live entries; expired ones are deleted.
_LIST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local value = all[i + 1]
  local space = string.find(value, ' ', 1, true)
  if tonumber(string.sub(value, 1, space - 1)) > now then
    live[#live + 1] = string.sub(value, space + 1)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
"""


class Instances:
    def __init__(self, instance_id: str, client: RedisClient | None, ttl: float) -> None:
        self._id = instance_id
        # What the entry says besides id and version (connections, channels, uptime...): set by
        # Services, which knows them.
        self.stats: Callable[[], dict[str, Any]] = dict
        self._client = client
        self._ttl = ttl
        self._beat = client.register_script(_BEAT) if client is not None else None
        self._list = client.register_script(_LIST) if client is not None else None

    def entry(self) -> dict[str, Any]:
        return {"id": self._id, "version": __version__, **self.stats()}

    async def list(self) -> list[dict[str, Any]]:
        if self._list is None:
            return [self.entry()]
        try:
            found = await self._list(keys=[KEY])
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return sorted((orjson.loads(raw) for raw in found), key=lambda e: str(e["id"]))

    async def run(self) -> None:
        """Keep this instance's entry fresh; at shutdown, remove it."""
        if self._beat is None or self._client is None:
            return
        try:
            while True:
                try:
                    await self._beat(keys=[KEY], args=[self._id, orjson.dumps(self.entry()), self._ttl])
                except (RedisError, OSError) as exc:
                    metrics.LISTENER_ERRORS.inc()
                    log.warning("instance heartbeat failed: %s", exc)
                await asyncio.sleep(self._ttl / 3)
        finally:
            # Gone at once rather than within the TTL; if Redis is down, the TTL does it.
            with contextlib.suppress(RedisError, OSError, asyncio.CancelledError):
                await asyncio.shield(self._client.hdel(KEY, self._id))
