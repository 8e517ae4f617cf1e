"""Users.admit and the slots' epoch: a new epoch means Redis lost the slots; ours go back first."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio

from app.broker import BrokerUnavailable
from app.broker.memory import MemoryBroker
from app.hub import Hub
from app.user_slots import MemorySlots, RedisSlots
from app.users import Users
from tests.support import free_port


class Lossy(MemorySlots):
    """Memory slots that can lose everything, with an epoch as Redis's would have."""

    def __init__(self) -> None:
        super().__init__()
        self.id, self.born = "", 0.0
        self.log: list[str] = []

    def lose(self) -> None:
        self._held.clear()
        self.id = ""

    async def epoch(self, new: str) -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        if not self.id:
            self.id, self.born = new, loop.time()
        return self.id, loop.time() - self.born

    async def keep(self, held: dict[str, set[str]]) -> None:
        self.log.append("keep")
        for user, clients in held.items():
            self._held.setdefault(user, set()).update(clients)

    async def admit(self, user: str, client: str, limit: int) -> bool:
        self.log.append("admit")
        return await super().admit(user, client, limit)


class Seat:
    """What Users reads of a session: its identity's user and its connection id."""

    def __init__(self, user: str, client: str) -> None:
        self.identity = SimpleNamespace(user_id=user)
        self.client = client


def session(user: str, client: str) -> Any:
    return Seat(user, client)


async def test_after_a_new_epoch_our_slots_are_registered_before_anyone_is_admitted(monkeypatch: Any) -> None:
    monkeypatch.setattr("app.users.SETTLE_SECONDS", 0.2)
    slots = Lossy()
    users = Users(Hub(MemoryBroker()), slots, limit=2, ttl=30)
    assert await users.admit(session("ann", "c1"))
    assert await users.admit(session("ann", "c2"))
    assert not await users.admit(session("ann", "c3"))
    slots.lose()
    slots.log.clear()
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert not await users.admit(session("ann", "c4"))  # c1 and c2 are back: still at the limit
    assert slots.log == ["keep", "admit"]
    assert loop.time() - start >= 0.15  # waited for the other instances to take theirs back
    # A known epoch costs no re-registration and no wait.
    slots.log.clear()
    assert await users.admit(session("bob", "c5"))
    assert slots.log == ["admit"]


async def test_re_registering_slots_with_redis_gone_is_broker_unavailable() -> None:
    """An admission that re-registers the slots (after Redis lost them) while Redis is away is
    told 108 like any other; a RedisError would have reached the handshake as a 1011."""
    client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=1)
    try:
        with pytest.raises(BrokerUnavailable):
            await RedisSlots(client, 30).keep({"alice": {"c1"}})
    finally:
        await client.aclose()
