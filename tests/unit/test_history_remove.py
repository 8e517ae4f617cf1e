"""``remove_history`` in the in-process broker (Redis's is run by tests/sdk/test_cent_api.py):
the messages go, the position stays, and offsets go on from it."""

from __future__ import annotations

from app.broker import Position
from app.broker.memory import MemoryBroker
from app.protocol import header


async def test_the_messages_go_and_the_position_stays() -> None:
    broker = MemoryBroker()
    first = await broker.publish("chat:x", header(), b'{"n":1}')
    await broker.publish("chat:x", header(), b'{"n":2}')
    assert first is not None
    await broker.remove_history("chat:x")
    gone = await broker.history("chat:x", 0)
    assert (gone.position, gone.entries) == (Position(2, first.epoch), [])
    assert not gone.covers(0, first.epoch)  # a reader from before it learns that it lost them
    assert await broker.publish("chat:x", header(), b'{"n":3}') == Position(3, first.epoch)
    assert [e.offset for e in (await broker.history("chat:x", 2)).entries] == [3]


async def test_a_channel_never_published_to_is_left_without_state() -> None:
    broker = MemoryBroker()
    await broker.remove_history("chat:none")
    assert (await broker.history("chat:none", 0)).position == Position(0, "")
