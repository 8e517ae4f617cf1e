"""Hub refcounting and dispatch, with the in-process broker and stand-in connections."""

from __future__ import annotations

import asyncio
import random
from typing import cast

import pytest

from app.broker import BrokerUnavailable, HistoryOptions
from app.broker.memory import MemoryBroker
from app.connection import Connection, ConnectionGone
from app.hub import Hub
from app.protocol import Outgoing, header, pack


class RecordingBroker(MemoryBroker):
    """The real memory broker, with a yield inside subscribe so interleavings can happen."""

    def __init__(self, fail_subscribe: bool = False, history: HistoryOptions | None = None) -> None:
        super().__init__(history)
        self.subscribes = 0
        self.unsubscribes = 0
        self.fail_subscribe = fail_subscribe

    async def subscribe(self, channel: str) -> None:
        self.subscribes += 1
        await asyncio.sleep(0)
        if self.fail_subscribe:
            raise BrokerUnavailable("down")
        await super().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.unsubscribes += 1
        await asyncio.sleep(0)
        await super().unsubscribe(channel)

    def subscribed(self) -> set[str]:
        return set(self._channels)


class Member:
    """Stands in for a Connection: the Hub only uses id, channels and offer()."""

    def __init__(self, ident: str) -> None:
        self.id = ident
        self.close_code: int | None = None
        self.channels: set[str] = set()
        self.frames: list[str] = []
        self.offered: list[Outgoing] = []

    def make_room(self, count: int) -> None:
        pass  # nothing is ever queued here

    def offer(self, out: Outgoing) -> bool:
        self.frames.append(out.payload.decode())
        self.offered.append(out)
        return True


def conn(ident: str) -> Connection:
    return cast(Connection, Member(ident))


async def started_hub(broker: RecordingBroker) -> Hub:
    hub = Hub(broker)
    await broker.start(hub.dispatch, hub.channels, hub.on_reconnect)
    return hub


async def test_concurrent_first_joins_subscribe_once() -> None:
    broker = RecordingBroker()
    hub = await started_hub(broker)
    members = [conn(f"c{i}") for i in range(20)]
    await asyncio.gather(*(hub.join(m, "room:1") for m in members))
    assert broker.subscribes == 1
    assert hub.members("room:1") == 20


async def test_last_leave_unsubscribes_and_rejoin_resubscribes() -> None:
    broker = RecordingBroker()
    hub = await started_hub(broker)
    a, b = conn("a"), conn("b")
    await hub.join(a, "x")
    await hub.join(b, "x")
    await hub.leave(a, "x")
    assert broker.subscribed() == {"x"}
    await hub.leave(b, "x")
    assert broker.subscribed() == set()
    assert hub.channels() == ()
    await hub.join(a, "x")
    assert broker.subscribed() == {"x"}


async def test_interleaved_joins_and_leaves_end_consistent() -> None:
    broker = RecordingBroker()
    hub = await started_hub(broker)
    rng = random.Random(7)
    members = [conn(f"c{i}") for i in range(30)]

    async def churn(m: Connection) -> None:
        for _ in range(20):
            channel = f"ch{rng.randrange(3)}"
            await hub.join(m, channel)
            await asyncio.sleep(0)
            await hub.leave(m, channel)

    await asyncio.gather(*(churn(m) for m in members))
    assert hub.channels() == ()
    assert broker.subscribed() == set()
    assert broker.subscribes == broker.unsubscribes
    assert hub._locks == {}


async def test_failed_subscribe_leaves_no_trace() -> None:
    broker = RecordingBroker(fail_subscribe=True)
    hub = await started_hub(broker)
    a = conn("a")
    with pytest.raises(BrokerUnavailable):
        await hub.join(a, "x")
    assert hub.channels() == ()
    assert a.channels == set()


async def test_dispatch_skips_the_excluded_member_and_shares_one_frame() -> None:
    broker = RecordingBroker()
    hub = await started_hub(broker)
    a, b, c = (Member(x) for x in "abc")
    for m in (a, b, c):
        await hub.join(cast(Connection, m), "x")
    hub.dispatch("x", pack(header(exclude="b"), b'{"n":1}'))
    assert a.frames == ['{"n":1}']
    assert b.frames == []
    assert c.frames == ['{"n":1}']


async def test_a_broadcast_is_encoded_once_for_all_members() -> None:
    broker = RecordingBroker()
    hub = await started_hub(broker)
    members = [Member(f"m{i}") for i in range(50)]
    for m in members:
        await hub.join(cast(Connection, m), "x")
    hub.dispatch("x", pack(header(), b'{"n":1}'))
    # Every member was offered the very same object, so its wire frame is built once, not 50 times.
    first = members[0].offered[0]
    assert all(m.offered == [first] for m in members)
    assert first.frame is first.frame  # cached after the first use


async def test_publish_goes_through_the_broker_to_local_members() -> None:
    broker = RecordingBroker()
    hub = await started_hub(broker)
    a = Member("a")
    await hub.join(cast(Connection, a), "x")
    position = await hub.publish("x", b'{"hello":true}')
    assert position is not None
    assert position.offset == 1
    assert a.frames == [f'{{"hello":true,"offset":1,"epoch":"{position.epoch}"}}']


async def test_publish_without_history_sends_the_frame_unchanged() -> None:
    broker = RecordingBroker(history=HistoryOptions(size=0))
    hub = await started_hub(broker)
    a = Member("a")
    await hub.join(cast(Connection, a), "x")
    assert await hub.publish("x", b'{"hello":true}') is None
    assert a.frames == ['{"hello":true}']


async def test_malformed_envelope_is_dropped_not_raised() -> None:
    broker = RecordingBroker()
    hub = await started_hub(broker)
    a = Member("a")
    await hub.join(cast(Connection, a), "x")
    hub.dispatch("x", b"garbage")
    assert a.frames == []


async def test_a_join_whose_connection_ended_during_the_subscribe_leaves_nothing_behind() -> None:
    """A server-side subscribe is no client command: the connection's end does not cancel it.
    One that ends while the SUBSCRIBE is in flight (its cleanup already done) must not be added."""
    broker = RecordingBroker()
    hub = await started_hub(broker)
    member = Member("gone")

    async def join() -> None:
        await hub.join(cast(Connection, member), "room:late")

    task = asyncio.create_task(join())
    await asyncio.sleep(0)  # inside the broker's subscribe
    member.close_code = 1005  # the socket went, and the session's cleanup found no channels
    with pytest.raises(ConnectionGone):
        await task
    assert hub.members("room:late") == 0
    assert member.channels == set()
    assert "room:late" not in broker.subscribed()  # released: nobody here needs it
