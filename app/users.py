"""Users across the cluster: commands that reach every connection of a user, and a connection cap.

A command from the server API (``send``, ``disconnect``, ``subscribe``, ``unsubscribe``) is ONE
message on the broker's control channel, whatever the number of connections; every instance acts
on its own connections of that user (``Users.on_control``). No instance needs to know where a
user's connections are.

``SWITCHBOARD_USER_CONNECTION_LIMIT`` counts a user's connections cluster-wide in one Redis sorted
set per user (connection id -> expiry, Redis's clock). Each instance refreshes its own entries, so
a dead instance's slots free themselves within the presence TTL.

If Redis loses its data (a restart without persistence, a failover to an empty replica), the
slots of every live connection are gone with it, and the limit would admit a user's connections
anew. So the slots have an epoch (``switchboard:user-slots-epoch``, created when missing, with its
birth on Redis's clock). Each instance reads it before every admission and once a second
(``CHECK_SECONDS``); when it finds an epoch it did not know, it re-registers its live sessions'
slots before admitting anyone, and no instance admits until the epoch is ``SETTLE_SECONDS`` old,
by when every live instance has noticed and done the same. (On Redis Cluster the epoch lives on
one shard: the loss of another shard alone is not noticed before the next refresh, TTL/3. An
instance of a version without the epoch re-registers at its next refresh.)
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Protocol

import orjson

from app import metrics
from app.auth import Identity
from app.broker import BrokerUnavailable
from app.connection import Connection
from app.errors import ProtocolError
from app.hub import NO_HISTORY, Hub
from app.protocol import Outgoing, Wire, header
from app.protocols.centrifuge_formats import CENTRIFUGE_WIRES, format_for
from app.user_slots import CHECK_SECONDS, SETTLE_SECONDS, Slots

log = logging.getLogger("switchboard.users")

CONTROL = "switchboard:users"


def message_push(wire: Wire, data: Any) -> Outgoing:
    """The server API's ``send``, as the connection's protocol pushes it."""
    if wire in CENTRIFUGE_WIRES:
        fmt = format_for(wire)
        return fmt.outgoing(fmt.push("", "message", {"data": data}))
    return Outgoing(orjson.dumps({"op": "message", "data": data}))


class UserSession(Protocol):
    """What Users needs of a signed-in session. ``app.session.Session`` is one; it hands itself
    in (``admit``, ``remove``), so Users, a layer below the sessions, never imports them."""

    @property
    def identity(self) -> Identity: ...

    @property
    def client(self) -> str: ...

    @property
    def conn(self) -> Connection: ...

    @property
    def ws(self) -> bool: ...

    @property
    def wire(self) -> Wire: ...

    @property
    def subscriptions(self) -> set[str]: ...

    async def server_subscribe(self, channel: str) -> None: ...

    async def server_unsubscribe(self, channel: str) -> None: ...


class Users:
    def __init__(self, hub: Hub, slots: Slots, limit: int, ttl: float) -> None:
        self._hub = hub
        self._slots = slots
        self._limit = limit
        self._ttl = ttl
        self._by_user: dict[str, set[UserSession]] = {}
        self._admitted: dict[str, set[str]] = {}  # user -> connection ids holding a slot here
        self._tasks: set[asyncio.Task[None]] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._epoch: str | None = None  # the slots' epoch this instance's slots are registered in
        self._settled_at = 0.0  # monotonic: admissions wait until then after a new epoch
        self._checking = asyncio.Lock()

    async def start(self) -> None:
        await self._hub.add_control(CONTROL, self.on_control)
        if self._limit:
            self._keeper = asyncio.create_task(self._keep_loop(), name="switchboard-user-slots")
            self._watcher = asyncio.create_task(self._watch_loop(), name="switchboard-user-slots-epoch")

    async def close(self) -> None:
        tasks = [*self._tasks, *(task for task in (self._keeper, self._watcher) if task)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- this instance's connections --------------------------------------------------------------

    async def admit(self, session: UserSession) -> bool:
        """Register a signed-in session; False if its user is at the cluster-wide limit."""
        user, client = session.identity.user_id, session.client
        if self._limit:
            await self._check_epoch()
            if (wait := self._settled_at - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # other instances are taking their slots back
            if not await self._slots.admit(user, client, self._limit):
                metrics.CONNECTS.labels("refused_user_limit").inc()
                return False
            self._admitted.setdefault(user, set()).add(client)
        self._by_user.setdefault(user, set()).add(session)
        return True

    async def remove(self, session: UserSession) -> None:
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

    def sessions_of(self, user: str) -> set[UserSession]:
        """This instance's signed-in sessions of ``user`` (for the server API's user_connections)."""
        return self._by_user.get(user, set())

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
            pushes: dict[Wire, Outgoing] = {}  # once per wire format per instance
            for session in sessions:
                if session.ws:
                    push = pushes.get(session.wire)
                    if push is None:
                        push = pushes[session.wire] = message_push(session.wire, command.get("data"))
                    session.conn.offer(push)
        elif op == "disconnect":
            for session in list(sessions):
                session.conn.close(int(command.get("code", 4003)), str(command.get("reason", "")) or None)
        elif op in ("subscribe", "unsubscribe"):
            for session in sessions:
                if session.ws:
                    self._spawn(session, op, str(command.get("channel")))

    def _spawn(self, session: UserSession, op: str, channel: str) -> None:
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

    async def _check_epoch(self) -> None:
        """Take this instance's slots back if Redis lost them. Raises BrokerUnavailable."""
        epoch, age = await self._slots.epoch(uuid.uuid4().hex)
        if epoch == self._epoch:
            return  # the usual case: admissions do not queue behind one another here
        async with self._checking:
            if epoch == self._epoch:
                return  # another admission took the slots back meanwhile
            if self._epoch is not None:
                log.warning("redis lost the user connection slots; re-registering this instance's")
            await self._slots.keep(self._admitted)
            self._epoch = epoch
            self._settled_at = max(self._settled_at, time.monotonic() + SETTLE_SECONDS - age)

    async def _watch_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self._check_epoch()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.LISTENER_ERRORS.inc()
                if not failing:  # once per outage, not once a second
                    log.warning("checking the user connection slots' epoch failed: %s", exc)
                failing = True

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
