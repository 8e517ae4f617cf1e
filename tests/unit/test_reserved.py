"""Reserved names: every internal Redis channel and key prefix is out of clients' reach."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from app import instances, presence_scripts, sweeper, user_slots, users
from app.auth import Identity
from app.broker import redis as redis_broker
from app.broker.memory import MemoryBroker
from app.broker.scripts import history_keys, idempotency_key
from app.channel_state import Channel, Subscription
from app.errors import RESERVED_CHANNEL, ErrorCode, ProtocolError
from app.hub import NO_HISTORY, Hub
from app.permissions import check_channel
from app.protocol import header, pack
from app.reserved import internal, reserved
from app.session import SERVER_PUBLISHER, idempotency_key_of, publisher_of
from tests.unit.test_hub import Member, conn

# Every name Switchboard itself gives Redis, built the way the code builds it.
INTERNAL_NAMES = [
    users.CONTROL,
    user_slots.SLOTS_PREFIX + "alice",
    user_slots.EPOCH,
    redis_broker.CONTROL_CHANNEL,
    "switchboard:probe:0",  # app/broker/cluster.py's per-shard probe (f-string)
    presence_scripts.key("chat"),
    presence_scripts.users_key("chat"),
    presence_scripts.EXPIRIES,
    sweeper.LOCK,
    instances.KEY,
    *history_keys("chat"),
    idempotency_key("chat", "k"),
]

LOOK_ALIKES = [
    "Switchboard:users",
    "SWITCHBOARD:control",
    "sWiTcHbOaRd:probe:1",
    "SB:x",
    "\uff53\uff57\uff49\uff54\uff43\uff48\uff42\uff4f\uff41\uff52\uff44:users",  # full-width letters
    "\u017fwitchboard:users",  # LATIN SMALL LETTER LONG S folds to s
    "switchboard\uff1ausers",  # FULLWIDTH COLON
    "\uff53\uff42:x",
]


@pytest.mark.parametrize("name", INTERNAL_NAMES)
def test_every_internal_redis_name_is_reserved_and_internal(name: str) -> None:
    assert reserved(name), name
    assert internal(name), name


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_miscased_and_compatibility_spellings_are_reserved(name: str) -> None:
    assert reserved(name)
    with pytest.raises(ProtocolError) as caught:
        check_channel(name)
    assert caught.value.code == ErrorCode.UNKNOWN_CHANNEL
    assert caught.value.message == RESERVED_CHANNEL


@pytest.mark.parametrize("name", [*INTERNAL_NAMES, *LOOK_ALIKES, "ѕwitchboard:users", "ѕb:x"])
def test_check_channel_refuses_every_internal_name_and_look_alike(name: str) -> None:
    # Cyrillic look-alikes (the first letter above) survive folding, but a namespace is ASCII.
    with pytest.raises(ProtocolError) as caught:
        check_channel(name)
    assert caught.value.code in (ErrorCode.UNKNOWN_CHANNEL, ErrorCode.BAD_REQUEST)


@pytest.mark.parametrize(
    "name",
    ["chat", "news:eu", "room:switchboard", "switchboard", "sb", "sbx:y", "switchboards:x", "x:switchboard:users"],
)
def test_names_merely_resembling_a_reserved_one_are_allowed(name: str) -> None:
    assert not reserved(name)
    assert check_channel(name) == name


async def test_the_hub_never_lets_a_client_channel_shadow_a_control_channel() -> None:
    broker = MemoryBroker()
    hub = Hub(broker)
    await broker.start(hub.dispatch, hub.channels, hub.on_reconnect)
    commands: list[bytes] = []
    await hub.add_control("ops:control", commands.append)  # a control channel under any name
    spy = conn("spy")
    for channel in ("ops:control", users.CONTROL, redis_broker.CONTROL_CHANNEL, "sb:x"):
        with pytest.raises(ProtocolError) as caught:
            await hub.join(spy, channel)
        assert caught.value.code == ErrorCode.UNKNOWN_CHANNEL
        with pytest.raises(ProtocolError):
            await hub.publish(channel, b"{}")
    assert spy.channels == set()
    await broker.publish("ops:control", header(), b'{"op":"send"}', NO_HISTORY)
    await asyncio.sleep(0)
    assert commands == [b'{"op":"send"}']
    # Dispatch prefers the control handler even over a channel of the same name (which join
    # can no longer make: planted here by hand, as the old bug made it).
    planted = hub._channels["ops:control"] = Channel("ops:control", hub.namespaces.for_channel("ops:control"))
    planted.members["spy"] = Subscription(spy, 0, "", False, False)
    hub.dispatch("ops:control", pack(header(), b'{"op":"again"}'))
    assert commands[-1] == b'{"op":"again"}'
    assert cast(Member, spy).frames == []


def test_idempotency_keys_are_scoped_by_publisher() -> None:
    alice, bob = Identity(user_id="alice", name="A"), Identity(user_id="bob", name="B")
    anonymous = Identity(user_id="", name="Anonymous")
    server = idempotency_key_of("announcement-7", SERVER_PUBLISHER)
    scoped = {
        server,
        idempotency_key_of("announcement-7", publisher_of(alice, "c1")),
        idempotency_key_of("announcement-7", publisher_of(bob, "c1")),
        idempotency_key_of("announcement-7", publisher_of(anonymous, "c1")),
        idempotency_key_of("announcement-7", publisher_of(anonymous, "c2")),
    }
    assert len(scoped) == 5
    # The same user on another connection (a reconnect, another instance) is the same publisher.
    assert publisher_of(alice, "c1") == publisher_of(alice, "c9")
    assert idempotency_key_of("announcement-7", SERVER_PUBLISHER) == server
    assert idempotency_key_of(None, SERVER_PUBLISHER) is None
    # Any user id, even one that is no valid UTF-8 (a lone surrogate from JSON), and a short key.
    odd = publisher_of(Identity(user_id="\ud800:x" * 500, name="?"), "c1")
    assert ":" not in odd
    assert len(odd) < 30
