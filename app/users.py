"""Users across the cluster: commands that reach every connection of a user, and a connection cap.

A command from the server API (``send``, ``disconnect``, ``subscribe``, ``unsubscribe``) is ONE
message on the broker's control channel, whatever the number of connections; every instance acts
on its own connections of that user (``Users.on_control``). No instance needs to know where a
user's connections are.

``SWITCHBOARD_USER_CONNECTION_LIMIT`` counts a user's connections cluster-wide in one Redis sorted
set per user (connection id -> expiry, Redis's clock). Each instance refreshes its own entries, so
a dead instance's slots free themselves within the presence TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from redis.exceptions import RedisError

from app import metrics
from app.broker import Broker, BrokerUnavailable, redis_client
from app.broker.redis_target import RedisClient
from app.errors import ProtocolError
from app.hub import NO_HISTORY, Hub
from app.protocol import Outgoing, header

if TYPE_CHECKING:
    from app.session import Session

log = logging.getLogger("switchboard.users")

CONTROL = "switchboard:users"
SLOTS_PREFIX = "switchboard:user:"
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
        """Refresh this instance's slots (called every TTL/3)."""
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


class RedisSlots:
    def __init__(self, client: RedisClient, ttl: float) -> None:
        self._client = client
        self._ttl = ttl
        self._admit = client.register_script(_ADMIT)
        self._keep = client.register_script(_KEEP)

    async def admit(self, user: str, client: str, limit: int) -> bool:
        try:
            return bool(await self._admit(keys=[SLOTS_PREFIX + user], args=[self._ttl, client, limit]))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def release(self, user: str, client: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.zrem(SLOTS_PREFIX + user, client)

    async def keep(self, held: dict[str, set[str]]) -> None:
        for user, clients in held.items():
            await self._keep(keys=[SLOTS_PREFIX + user], args=[self._ttl, *clients])


def create_slots(broker: Broker, ttl: float) -> Slots:
    client = redis_client(broker)
    return RedisSlots(client, ttl) if client is not None else MemorySlots()


class Users:
    def __init__(self, hub: Hub, slots: Slots, limit: int, ttl: float) -> None:
        self._hub = hub
        self._slots = slots
        self._limit = limit
        self._ttl = ttl
        self._by_user: dict[str, set[Session]] = {}
        self._admitted: dict[str, set[str]] = {}  # user -> connection ids holding a slot here
        self._tasks: set[asyncio.Task[None]] = set()
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._hub.add_control(CONTROL, self.on_control)
        if self._limit:
            self._keeper = asyncio.create_task(self._keep_loop(), name="switchboard-user-slots")

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._keeper] if self._keeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- this instance's connections --------------------------------------------------------------

    async def admit(self, session: Session) -> bool:
        """Register a signed-in session; False if its user is at the cluster-wide limit."""
        user, client = session.identity.user_id, session.client
        if self._limit:
            if not await self._slots.admit(user, client, self._limit):
                metrics.CONNECTS.labels("refused_user_limit").inc()
                return False
            self._admitted.setdefault(user, set()).add(client)
        self._by_user.setdefault(user, set()).add(session)
        return True

    async def remove(self, session: Session) -> None:
        user = session.identity.user_id
        sessions = self._by_user.get(user)
        if sessions is None or session not in sessions:
            return
        sessions.discard(session)
        if not sessions:
            del self._by_user[user]
        admitted = self._admitted.get(user)
        if admitted is not None and session.client in admitted:
            admitted.discard(session.client)
            if not admitted:
                del self._admitted[user]
            await self._slots.release(user, session.client)

    # -- cluster-wide commands --------------------------------------------------------------------

    async def command(self, op: str, user: str, **fields: Any) -> None:
        """Reach every connection of ``user`` on every instance. Raises BrokerUnavailable."""
        frame = orjson.dumps({"op": op, "user": user, **fields})
        await self._hub.broker.publish(CONTROL, header(), frame, NO_HISTORY)

    def on_control(self, frame: bytes) -> None:
        """Every instance gets every command; it acts on its own connections of the user only."""
        try:
            command = orjson.loads(frame)
            sessions = self._by_user.get(command["user"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            metrics.LISTENER_ERRORS.inc()
            log.warning("dropped a malformed user command")
            return
        if not sessions:
            return
        op = command.get("op")
        if op == "send":
            push = Outgoing(orjson.dumps({"op": "message", "data": command.get("data")}))  # once per instance
            for session in sessions:
                if session.ws:
                    session.conn.offer(push)
        elif op == "disconnect":
            for session in list(sessions):
                session.conn.close(int(command.get("code", 4003)), str(command.get("reason", "")) or None)
        elif op in ("subscribe", "unsubscribe"):
            for session in sessions:
                if session.ws:
                    self._spawn(session, op, str(command.get("channel")))

    def _spawn(self, session: Session, op: str, channel: str) -> None:
        work = session.server_subscribe(channel) if op == "subscribe" else session.server_unsubscribe(channel)
        task = asyncio.create_task(self._guard(work, op))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(work: Any, op: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BrokerUnavailable as exc:
            log.warning("server-side %s failed: %s", op, exc)
        except ProtocolError as exc:  # a reserved name: the API refuses those, so not from it
            log.warning("server-side %s refused: %s", op, exc.message)
        except Exception:
            metrics.LISTENER_ERRORS.inc()
            log.exception("server-side %s failed", op)

    async def _keep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._slots.keep(self._admitted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.LISTENER_ERRORS.inc()
                log.warning("refreshing user connection slots failed: %s", exc)
