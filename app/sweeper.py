"""Members of an instance that died are announced as leaving: once, cluster-wide.

Every instance runs ``Sweeper.run``; each round, whichever holds a short Redis lock sweeps.
``Presence.sweep`` reads the channels due in an expiry index (one read per round, whatever the
number of channels), removes their expired members in one atomic step per channel and returns
them, so each one is handed to exactly one announcer, which publishes what a live member's leaving
would have: the tutorial chat's and rooms' own "left" frames, and ``leave`` pushes where the namespace
has ``join_leave``. Subscribers everywhere hear of a dead instance's members within
``PRESENCE_TTL`` plus a few seconds (a sweep round, and the lock's expiry if its holder died).
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from app import metrics
from app.broker.redis_target import RedisClient
from app.hub import Hub
from app.presence import Presence, member_name, parse_member
from app.tutorial import is_tutorial, membership_notice

log = logging.getLogger("switchboard.sweeper")

LOCK = "switchboard:presence-sweeper"
ROUND_SECONDS = 1.0
LOCK_MS = 3000
# Take the lock if it is free or already ours; extend it.
_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class Sweeper:
    def __init__(self, presence: Presence, hub: Hub, client: RedisClient | None, instance: str) -> None:
        self._presence = presence
        self._hub = hub
        self._instance = instance
        self._lock = client.register_script(_LOCK) if client is not None else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(ROUND_SECONDS)
            if self._lock is None:
                continue  # in-memory presence: nothing expires, nothing to sweep
            try:
                if not await self._lock(keys=[LOCK], args=[self._instance, LOCK_MS]):
                    # Another instance sweeps and reports the lag: ours would be stale.
                    metrics.PRESENCE_SWEEP_LAG.set(0)
                    continue
                for channel, gone, left in await self._presence.sweep():
                    await self._announce(channel, gone, left)
                metrics.PRESENCE_SWEEPS.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.LISTENER_ERRORS.inc()
                metrics.PRESENCE_SWEEPS.labels("error").inc()
                log.warning("presence sweep failed: %s", exc)

    async def _announce(self, channel: str, gone: list[str], left: int) -> None:
        metrics.PRESENCE_EXPIRED.inc(len(gone))
        opts = self._hub.namespaces.for_channel(channel)
        for n, member in enumerate(gone, start=1):
            if is_tutorial(channel):
                # Counts as the endpoint would have told them: one fewer with each leave.
                notice = membership_notice(channel, member_name(member), left + len(gone) - n, joined=False)
                if notice is not None:
                    await self._hub.publish(channel, orjson.dumps(notice[0]))
            elif opts.join_leave:
                push = {"op": "leave", "channel": channel, "info": parse_member(member)}
                await self._hub.publish(channel, orjson.dumps(push), ephemeral=True)
