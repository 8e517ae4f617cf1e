"""Shared history reads: one read per group of concurrent resumes, never one issued too early."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from app.broker import BrokerUnavailable, History
from app.broker.memory import MemoryBroker
from app.history_reads import SharedReads
from app.protocol import header


class GatedBroker(MemoryBroker):
    """Each history read waits at a gate the test opens, and is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.gate = asyncio.Event()
        self.fail = False

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        self.reads += 1
        result = await super().history(channel, since, limit)  # the snapshot is taken here
        await self.gate.wait()
        if self.fail:
            raise BrokerUnavailable("down")
        return result


async def publish(broker: MemoryBroker, n: int) -> None:
    await broker.publish("x", header(), orjson.dumps({"n": n}))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_during_a_read_share_one_later_read_that_sees_what_came_before_them() -> None:
    broker = GatedBroker()
    reads = SharedReads(broker)
    await publish(broker, 1)
    first = asyncio.create_task(reads.history("x", 0))
    await settle()  # the first read has taken its snapshot: one message
    await publish(broker, 2)  # published before the next callers arrive: they must see it
    later = [asyncio.create_task(reads.history("x", 0)) for _ in range(50)]
    await settle()
    broker.gate.set()
    assert len((await first).entries) == 1
    results = await asyncio.gather(*later)
    assert {len(r.entries) for r in results} == {2}
    assert broker.reads == 2  # 51 callers, two reads


async def test_a_cancelled_caller_does_not_cancel_the_read_for_the_others() -> None:
    broker = GatedBroker()
    reads = SharedReads(broker)
    await publish(broker, 1)
    one, two = asyncio.create_task(reads.history("x", 0)), asyncio.create_task(reads.history("x", 0))
    await settle()
    one.cancel()
    broker.gate.set()
    assert len((await two).entries) == 1
    assert one.cancelled()


async def test_a_failed_read_fails_every_caller_waiting_on_it_and_the_next_read_is_fresh() -> None:
    broker = GatedBroker()
    reads = SharedReads(broker)
    broker.fail = True
    callers = [asyncio.create_task(reads.history("x", 0)) for _ in range(3)]
    await settle()
    broker.gate.set()
    for caller in callers:
        with pytest.raises(BrokerUnavailable):
            await caller
    broker.fail = False
    await publish(broker, 1)
    assert len((await reads.history("x", 0)).entries) == 1


async def test_different_offsets_are_different_reads() -> None:
    broker = GatedBroker()
    reads = SharedReads(broker)
    broker.gate.set()
    for n in range(3):
        await publish(broker, n)
    found = await asyncio.gather(reads.history("x", 0), reads.history("x", 2))
    assert [len(h.entries) for h in found] == [3, 1]
    assert broker.reads == 2
