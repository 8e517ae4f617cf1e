"""Offsets, history and recovery in the Hub, over the in-process broker (which keeps history too)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson

from app.broker import History, HistoryOptions, Position
from app.broker.base import EpochSource
from app.broker.memory import MemoryBroker
from app.connection import Connection
from app.hub import Hub
from app.protocol import header
from app.session import EPOCH


class Member:
    """Stands in for a Connection: records every frame it is offered, parsed."""

    def __init__(self, ident: str) -> None:
        self.id = ident
        self.close_code: int | None = None
        self.channels: set[str] = set()
        self.frames: list[dict[str, Any]] = []
        self.drains = 0

    def make_room(self, count: int) -> None:
        pass  # nothing is ever queued here

    async def drained(self) -> None:
        self.drains += 1
        await asyncio.sleep(0)  # a real socket's drain lets other tasks (publishers) run

    async def history_turn(self) -> None:
        pass  # no history budget here (app/budgets.py has its own tests)

    def spend_history(self, size: int) -> None:
        pass

    def offer(self, out: Any) -> bool:
        self.frames.append(orjson.loads(out.payload))
        return True

    def contents(self) -> list[Any]:
        return [f["n"] for f in self.frames if "n" in f]

    def recovered(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "recovered"]


class Recording(Member):
    """A Member that also keeps what it is offered, as it was offered; ``parse = False`` for
    frames that are not JSON (Protobuf), which are then kept only."""

    parse = True

    def __init__(self, ident: str) -> None:
        super().__init__(ident)
        self.offered: list[Any] = []

    def offer(self, out: Any) -> bool:
        self.offered.append(out)
        return super().offer(out) if self.parse else True


class SlowHistoryBroker(MemoryBroker):
    """Lets the test publish while a history read is in flight."""

    def __init__(self, history: HistoryOptions | None = None) -> None:
        super().__init__(history)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.slow = False

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        result = await super().history(channel, since, limit)
        if self.slow:
            self.reading.set()
            await self.release.wait()
        return result


async def hub_with(broker: MemoryBroker) -> Hub:
    hub = Hub(broker)
    await broker.start(hub.dispatch, hub.channels, hub.on_reconnect)
    return hub


async def publish(hub: Hub, channel: str, *numbers: int) -> Position:
    position = None
    for n in numbers:
        position = await hub.publish(channel, orjson.dumps({"n": n}))
    assert position is not None
    return position


async def joined(hub: Hub, name: str, channel: str, resume: Position | None = None) -> Member:
    member = Member(name)
    await hub.join(cast(Connection, member), channel, resume)
    return member


async def test_frames_carry_consecutive_offsets_and_one_epoch() -> None:
    hub = await hub_with(MemoryBroker())
    a = await joined(hub, "a", "x")
    await publish(hub, "x", 1, 2, 3)
    assert [f["offset"] for f in a.frames] == [1, 2, 3]
    assert len({f["epoch"] for f in a.frames}) == 1


async def test_resume_delivers_what_was_missed_in_order_then_live() -> None:
    hub = await hub_with(MemoryBroker())
    a = await joined(hub, "a", "x")
    await publish(hub, "x", 1, 2)
    last = a.frames[-1]
    await hub.leave(cast(Connection, a), "x")
    await publish(hub, "x", 3, 4, 5)
    b = await joined(hub, "b", "x", Position(last["offset"], last["epoch"]))
    await publish(hub, "x", 6)
    assert b.contents() == [3, 4, 5, 6]
    assert b.recovered() == [{"type": "recovered", "ok": True, "count": 3, "offset": 5, "epoch": last["epoch"]}]
    assert b.frames[3]["type"] == "recovered"  # after the recovered messages, before live ones


async def test_resume_at_the_head_recovers_nothing_and_is_ok() -> None:
    hub = await hub_with(MemoryBroker())
    position = await publish(hub, "x", 1)
    b = await joined(hub, "b", "x", position)
    assert b.contents() == []
    assert b.recovered() == [{"type": "recovered", "ok": True, "count": 0, "offset": 1, "epoch": position.epoch}]


async def test_resume_with_another_epoch_is_told_ok_false() -> None:
    hub = await hub_with(MemoryBroker())
    position = await publish(hub, "x", 1, 2)
    b = await joined(hub, "b", "x", Position(1, "0ld"))
    assert b.contents() == []
    assert b.recovered() == [
        {"type": "recovered", "ok": False, "reason": "epoch changed", "offset": 2, "epoch": position.epoch}
    ]


async def test_a_gap_longer_than_the_history_is_reported_not_skipped() -> None:
    hub = await hub_with(MemoryBroker(HistoryOptions(size=3)))
    start = await publish(hub, "x", 1)
    await publish(hub, "x", 2, 3, 4, 5)
    b = await joined(hub, "b", "x", start)
    assert b.contents() == []
    assert b.recovered()[0]["ok"] is False
    assert b.recovered()[0]["reason"] == "history too short"
    await publish(hub, "x", 6)
    assert b.contents() == [6]


async def test_an_offset_ahead_of_the_channel_is_refused() -> None:
    hub = await hub_with(MemoryBroker())
    position = await publish(hub, "x", 1)
    b = await joined(hub, "b", "x", Position(9, position.epoch))
    assert b.recovered()[0]["reason"] == "offset ahead of channel"


async def test_live_messages_during_the_history_read_come_after_it_once_each() -> None:
    broker = SlowHistoryBroker()
    hub = await hub_with(broker)
    await joined(hub, "keeps-the-channel", "x")
    start = await publish(hub, "x", 1)
    await publish(hub, "x", 2, 3)
    broker.slow = True
    join = asyncio.create_task(joined(hub, "b", "x", start))
    await asyncio.wait_for(broker.reading.wait(), 5)
    await publish(hub, "x", 4, 5)  # live while b's history (2, 3) is being read
    broker.release.set()
    b = await asyncio.wait_for(join, 5)
    await publish(hub, "x", 6)
    assert b.contents() == [2, 3, 4, 5, 6]


async def test_the_same_offset_is_delivered_once() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    seen: list[bytes] = []

    def record(channel: str, envelope: bytes) -> None:
        seen.append(envelope)
        hub.dispatch(channel, envelope)

    broker._on_message = record
    await publish(hub, "x", 1, 2)
    for envelope in seen:
        hub.dispatch("x", envelope)  # a redelivery, as after a resubscribe
    assert a.contents() == [1, 2]


async def test_a_gap_in_the_live_feed_is_filled_from_history_in_order() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    await publish(hub, "x", 1)
    broker._channels.discard("x")  # this process's feed drops out for a while
    await publish(hub, "x", 2, 3)
    broker._channels.add("x")
    await publish(hub, "x", 4)
    await publish(hub, "x", 5)
    await wait_for(lambda: a.contents() == [1, 2, 3, 4, 5])
    assert [f["offset"] for f in a.frames] == [1, 2, 3, 4, 5]


async def test_a_reconnect_fetches_what_the_feed_missed() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    await publish(hub, "x", 1)
    broker._channels.discard("x")
    await publish(hub, "x", 2, 3)
    broker._channels.add("x")
    hub.on_reconnect()
    await wait_for(lambda: a.contents() == [1, 2, 3])
    await publish(hub, "x", 4)
    assert a.contents() == [1, 2, 3, 4]


async def test_a_new_epoch_on_the_live_feed_tells_members_ok_false() -> None:
    clock = [0.0]
    broker = MemoryBroker(HistoryOptions(size=10, ttl=5, meta_ttl=10), clock=lambda: clock[0])
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    first = await publish(hub, "x", 1)
    clock[0] = 11.0  # the channel's meta expired: offsets restart in a new epoch
    second = await publish(hub, "x", 2)
    assert second.epoch != first.epoch
    assert second.offset == 1
    assert a.contents() == [1, 2]
    assert a.recovered() == [
        {"type": "recovered", "ok": False, "reason": "epoch changed", "offset": 0, "epoch": second.epoch}
    ]


async def test_expired_history_reports_too_short_but_keeps_the_epoch() -> None:
    clock = [0.0]
    broker = MemoryBroker(HistoryOptions(size=10, ttl=5, meta_ttl=100), clock=lambda: clock[0])
    hub = await hub_with(broker)
    start = await publish(hub, "x", 1, 2)
    clock[0] = 6.0
    b = await joined(hub, "b", "x", Position(1, start.epoch))
    assert b.recovered()[0]["reason"] == "history too short"
    assert b.recovered()[0]["epoch"] == start.epoch


async def test_excluded_sender_stays_excluded_when_the_hub_catches_up() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    b = await joined(hub, "b", "x")
    await publish(hub, "x", 1)
    broker._channels.discard("x")
    await broker.publish("x", header(exclude="a"), b'{"n":2}')
    broker._channels.add("x")
    hub.on_reconnect()
    await wait_for(lambda: b.contents() == [1, 2])
    await publish(hub, "x", 3)
    assert a.contents() == [1, 3]


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll, with a deadline, for what a background catch-up task will have done."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the catch-up task has no event to wait on
            await asyncio.sleep(0.001)


async def test_after_a_reconnect_into_a_new_epoch_members_get_it_from_its_start() -> None:
    clock = [0.0]
    broker = MemoryBroker(HistoryOptions(size=10, ttl=5, meta_ttl=10), clock=lambda: clock[0])
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    await publish(hub, "x", 1)
    broker._channels.discard("x")  # the feed drops; meanwhile the history is lost (a Redis restart)
    clock[0] = 11.0
    new = await publish(hub, "x", 2, 3)
    broker._channels.add("x")
    hub.on_reconnect()
    await wait_for(lambda: a.contents() == [1, 2, 3])
    assert a.recovered() == [
        {"type": "recovered", "ok": False, "reason": "epoch changed", "offset": 0, "epoch": new.epoch}
    ]
    assert a.frames[1]["type"] == "recovered"  # told before the new epoch's messages


async def test_a_gap_longer_than_the_history_delivers_what_is_left_after_ok_false() -> None:
    broker = MemoryBroker(HistoryOptions(size=2))
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    await publish(hub, "x", 1)
    broker._channels.discard("x")
    await publish(hub, "x", 2, 3, 4, 5)
    broker._channels.add("x")
    hub.on_reconnect()
    await wait_for(lambda: a.contents() == [1, 4, 5])
    assert [f.get("reason") for f in a.recovered()] == ["history too short"]


def test_epoch_candidates_are_never_reused_and_fit_the_resume_format() -> None:
    source, other = EpochSource(), EpochSource()
    seen = {source() for _ in range(1000)} | {other() for _ in range(1000)}
    assert len(seen) == 2000
    assert all(EPOCH.match(epoch) for epoch in seen)


async def test_a_catch_up_without_a_known_position_says_so_and_replays_nothing() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    await publish(hub, "x", 1, 2)  # history the members never saw and never asked for
    a = await joined(hub, "a", "x")
    channel = hub.channel("x")
    assert channel is not None
    channel.offset, channel.epoch, channel.known = 0, "", False  # as if the read at subscribe failed
    for sub in channel.members.values():
        sub.epoch = ""
    hub.on_reconnect()
    await wait_for(lambda: a.recovered())
    assert a.recovered()[0]["reason"] == "position unknown"
    await publish(hub, "x", 3)
    assert a.contents() == [3]


async def test_closing_the_hub_stops_a_catch_up_that_cannot_finish() -> None:
    broker = SlowHistoryBroker()
    hub = await hub_with(broker)
    await joined(hub, "a", "x")
    broker.slow = True
    hub.on_reconnect()
    await asyncio.wait_for(broker.reading.wait(), 5)
    catch_ups = [t for t in asyncio.all_tasks() if t.get_name().startswith("switchboard-catch-up")]
    assert len(catch_ups) == 1
    await asyncio.wait_for(hub.close(), 5)
    assert catch_ups[0].cancelled()


async def test_ws_members_get_tutorial_frames_wrapped_once_per_message() -> None:
    hub = await hub_with(MemoryBroker())
    tutorial = Member("t")
    ws_one, ws_two = Recording("w1"), Recording("w2")
    await hub.join(cast(Connection, tutorial), "room:1")
    for m in (ws_one, ws_two):
        await hub.join(cast(Connection, m), "room:1", ws=True)
    position = await publish(hub, "room:1", 7)
    assert tutorial.frames == [{"n": 7, "offset": 1, "epoch": position.epoch}]
    expected = {"op": "pub", "channel": "room:1", "offset": 1, "epoch": position.epoch, "data": tutorial.frames[0]}
    assert ws_one.frames == ws_two.frames == [expected]
    assert ws_one.offered[0] is ws_two.offered[0]  # one wrapped frame for both /ws members


async def test_ws_members_are_told_of_lost_history_as_a_recovered_push() -> None:
    clock = [0.0]
    broker = MemoryBroker(HistoryOptions(size=10, ttl=5, meta_ttl=10), clock=lambda: clock[0])
    hub = await hub_with(broker)
    tutorial, ws = Member("t"), Member("w")
    await hub.join(cast(Connection, tutorial), "x")
    await hub.join(cast(Connection, ws), "x", ws=True)
    await publish(hub, "x", 1)
    clock[0] = 11.0
    second = await publish(hub, "x", 2)
    assert tutorial.recovered()[0]["type"] == "recovered"
    lost = [f for f in ws.frames if f.get("op") == "recovered"]
    assert lost == [
        {"op": "recovered", "channel": "x", "ok": False, "offset": 0, "epoch": second.epoch, "reason": "epoch changed"}
    ]
    assert ws.contents() == [1, 2]  # a /ws channel outside the tutorial's gets frames as published


async def test_ephemeral_publishes_skip_history_and_offsets() -> None:
    hub = await hub_with(MemoryBroker())
    a = await joined(hub, "a", "x")
    assert await hub.publish("x", orjson.dumps({"op": "join"}), ephemeral=True) is None
    await publish(hub, "x", 1)
    assert a.frames[0] == {"op": "join"}
    assert a.frames[1]["offset"] == 1  # the ephemeral frame took no offset
    history = await hub.broker.history("x", 0)
    assert [e.offset for e in history.entries] == [1]


async def test_an_idempotency_key_publishes_once_until_it_expires() -> None:
    clock = [0.0]
    broker = MemoryBroker(HistoryOptions(size=10, ttl=500, meta_ttl=1000), clock=lambda: clock[0], idempotency_ttl=60)
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    first = await hub.publish("x", orjson.dumps({"n": 1}), idempotency_key="k")
    again = await hub.publish("x", orjson.dumps({"n": 1}), idempotency_key="k")
    assert again == first
    assert a.contents() == [1]
    clock[0] = 61.0  # past the idempotency TTL: the same key publishes again
    later = await hub.publish("x", orjson.dumps({"n": 1}), idempotency_key="k")
    assert later is not None
    assert first is not None
    assert later.offset == first.offset + 1
    assert a.contents() == [1, 1]


class CountingBroker(MemoryBroker):
    """Counts history reads; ``during_read`` runs (publishes) inside each one."""

    def __init__(self, history: HistoryOptions | None = None) -> None:
        super().__init__(history)
        self.reads = 0
        self.during_read: Any = None

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        self.reads += 1
        if self.during_read is not None:
            await self.during_read()
        return await super().history(channel, since, limit)


def sized(n: int) -> bytes:
    return orjson.dumps({"n": n, "pad": "x" * 1000})


async def test_a_long_replay_is_read_in_pages_each_after_the_client_drained() -> None:
    broker = CountingBroker(HistoryOptions(size=1000, read_bytes=10_000))  # about 9 messages a page
    hub = await hub_with(broker)
    await joined(hub, "keeps-the-channel", "x")
    start = await publish(hub, "x", 0)
    for n in range(1, 101):
        await hub.publish("x", sized(n))
    broker.reads = 0
    b = await joined(hub, "b", "x", start)
    assert b.contents() == list(range(1, 101))
    assert b.recovered() == [{"type": "recovered", "ok": True, "count": 100, "offset": 101, "epoch": start.epoch}]
    assert broker.reads >= 100 // 10  # no read held more than read_bytes
    assert b.drains == broker.reads - 1  # and each page waited for the one before to drain


async def test_a_replay_outrun_by_live_messages_ends_told_not_holding_them_all() -> None:
    # Live messages wait while a replay runs, at most history_size of them: more than that means
    # the replay has fallen further behind than history reaches, and the client is told so.
    broker = CountingBroker(HistoryOptions(size=20, read_bytes=3_000))  # 2 messages a page
    hub = await hub_with(broker)
    await joined(hub, "keeps-the-channel", "x")
    start = await publish(hub, "x", 0)
    for n in range(1, 16):
        await hub.publish("x", sized(n))
    published = [15]

    async def publish_more() -> None:  # 5 live messages per page read: faster than the replay
        for _ in range(5):
            published[0] += 1
            await hub.publish("x", sized(published[0]))

    broker.during_read = publish_more
    b = await asyncio.wait_for(joined(hub, "b", "x", start), 5)
    broker.during_read = None
    assert b.drains >= 1  # it read a page, then found history had moved past it
    assert [(f["ok"], f.get("reason")) for f in b.recovered()] == [(False, "history too short")]
    await publish(hub, "x", 1000)
    got = b.contents()
    assert got == sorted(set(got)), "in order, each once"
    assert got[-1] == 1000


async def test_joining_a_channel_never_published_creates_no_history_state() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    a = await joined(hub, "a", "fresh", Position(0, ""))
    assert a.recovered() == [{"type": "recovered", "ok": True, "count": 0, "offset": 0, "epoch": ""}]
    assert (await broker.history("fresh", 0)).position == Position(0, "")
    assert broker._history == {}  # a read made nothing: only a publish does
    await publish(hub, "fresh", 1, 2)
    assert a.contents() == [1, 2]


async def test_a_client_at_the_start_resumes_into_the_first_epoch_from_offset_one() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    position = await publish(hub, "x", 1, 2, 3)
    b = await joined(hub, "b", "x", Position(0, ""))
    assert b.contents() == [1, 2, 3]
    assert b.recovered()[0]["ok"] is True
    assert b.recovered()[0]["epoch"] == position.epoch


async def test_a_gap_after_a_channels_first_epoch_begins_is_fetched_not_skipped() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")  # known: no epoch yet
    channel = hub.channel("x")
    assert channel is not None
    assert channel.known
    assert channel.epoch == ""
    # Offsets 1 and 2 are published while this process's feed is down; 3 arrives live.
    await broker.unsubscribe("x")
    await publish(hub, "x", 1, 2)
    await broker.subscribe("x")
    await publish(hub, "x", 3)
    await wait_for(lambda: a.contents() == [1, 2, 3])
    assert a.recovered() == []


async def test_a_head_that_went_back_after_a_failover_is_reported_and_then_followed() -> None:
    broker = MemoryBroker()
    hub = await hub_with(broker)
    a = await joined(hub, "a", "x")
    await publish(hub, "x", 1, 2, 3, 4, 5)
    # A replica promoted without the last two writes: the same epoch, its head back at 3.
    lost = broker._history["x"]
    lost.offset = 3
    for _ in range(2):
        lost.entries.pop()
    hub.on_reconnect()
    await wait_for(lambda: a.recovered())
    assert [(r["ok"], r["offset"], r["reason"]) for r in a.recovered()] == [(False, 3, "offset ahead of channel")]
    await publish(hub, "x", 6)  # offset 4 again: delivered, not taken for a duplicate
    assert a.contents() == [1, 2, 3, 4, 5, 6]
