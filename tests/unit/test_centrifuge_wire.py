"""Centrifugo's wire format in the Hub: once per message per process, recoveries in the reply,
and Switchboard's closes under Centrifugo's codes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from app import hub as hub_module
from app.broker import HistoryOptions, Position
from app.broker.memory import MemoryBroker
from app.channel_state import Joined, Subscription
from app.config import Settings
from app.connection import Connection
from app.errors import CENTRIFUGE_CLOSES, CloseCode
from app.protocol import Outgoing, Wire
from app.protocols import centrifuge_commands as commands_module
from app.protocols.centrifuge import CentrifugeClient
from app.protocols.centrifuge_wire import channel_push as encode
from tests.unit.test_recovery import Member, Recording, hub_with, wait_for


async def test_centrifuge_members_share_one_push_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counted(*args: Any, **kwargs: Any) -> bytes | None:
        calls.append(args)
        return encode(*args, **kwargs)

    monkeypatch.setattr(hub_module, "channel_push", counted)
    hub = await hub_with(MemoryBroker())
    ws, one, two = Recording("w"), Recording("c1"), Recording("c2")
    await hub.join(cast(Connection, ws), "chat:x", ws=True)
    for member in (one, two):
        await hub.join(cast(Connection, member), "chat:x", wire=Wire.CENTRIFUGE)
    frame = {"op": "pub", "channel": "chat:x", "data": {"n": 1}, "info": {"user": "u", "client": "w"}}
    await hub.publish("chat:x", orjson.dumps(frame))
    assert len(calls) == 1  # parsed and encoded once, for both Centrifugo members
    assert one.offered[0] is two.offered[0]
    pub = {"data": {"n": 1}, "offset": 1, "info": {"user": "u", "client": "w"}}
    assert one.frames == [{"push": {"channel": "chat:x", "pub": pub}}]
    assert ws.frames[0]["op"] == "pub"  # /ws members get the frame as published
    join = {"op": "join", "channel": "chat:x", "info": {"client": "w", "user": "u", "info": {"k": 1}}}
    await hub.publish("chat:x", orjson.dumps(join), ephemeral=True)
    assert one.frames[1] == {
        "push": {"channel": "chat:x", "join": {"info": {"user": "u", "client": "w", "conn_info": {"k": 1}}}}
    }


async def test_a_recovery_is_collected_for_the_reply_not_pushed() -> None:
    hub = await hub_with(MemoryBroker())
    for n in range(3):
        frame = {"op": "pub", "channel": "chat:r", "data": n}
        position = await hub.publish("chat:r", orjson.dumps(frame))
    assert position is not None
    member = Member("c")
    replies: list[tuple[list[bytes], Joined]] = []

    def announce(sub: Subscription, joined: Joined) -> None:
        replies.append((list(sub.collected or []), joined))

    await hub.join(
        cast(Connection, member), "chat:r", Position(1, position.epoch), wire=Wire.CENTRIFUGE, announce=announce
    )
    [(pubs, joined)] = replies
    assert [orjson.loads(p) for p in pubs] == [{"data": 1, "offset": 2}, {"data": 2, "offset": 3}]
    assert joined.ok is True
    assert member.frames == []  # nothing pushed: the publications travel in the reply


async def test_every_switchboard_close_has_a_centrifugo_code() -> None:
    # Every CloseCode but a normal close maps into the ranges the SDKs act on.
    assert set(CENTRIFUGE_CLOSES) == {int(code) for code in CloseCode} - {CloseCode.NORMAL}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    websocket = SimpleNamespace(_send=send, _receive=None, scope={})
    for code, expected in ((CloseCode.SLOW_CONSUMER, 3008), (CloseCode.SERVICE_RESTART, 3001), (4100, 4100)):
        conn = Connection(cast(Any, websocket), "centrifuge", Settings(dev_mode=True))
        conn.wire_codes = CENTRIFUGE_CLOSES
        conn.close(code)
        await wait_for(lambda: len(sent) == 1)
        assert sent.pop()["code"] == expected
        assert conn.close_code == int(code)  # metrics keep Switchboard's own code


class Closable(Member):
    def __init__(self, ident: str) -> None:
        super().__init__(ident)
        self.closed: list[tuple[int, str | None]] = []

    def close(self, code: int, reason: str | None = None) -> None:
        self.closed.append((int(code), reason))


async def test_a_gap_history_cannot_fill_makes_a_centrifugo_member_reconnect_3010() -> None:
    clock = [0.0]
    broker = MemoryBroker(HistoryOptions(size=10, ttl=5, meta_ttl=10), clock=lambda: clock[0])
    hub = await hub_with(broker)
    member = Closable("c")
    await hub.join(cast(Connection, member), "x", wire=Wire.CENTRIFUGE)
    await hub.publish("x", orjson.dumps({"op": "pub", "channel": "x", "data": 1}))
    clock[0] = 11.0  # the history and its epoch expire: the next publication starts a new epoch
    await hub.publish("x", orjson.dumps({"op": "pub", "channel": "x", "data": 2}))
    assert member.closed == [(3010, "epoch changed")]  # the SDK reconnects and recovers, or is told


class StubConn:
    """What CentrifugeClient.serve uses of a Connection: frames in, a close code, the rate limit."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.close_code: int | None = None
        self.wire_codes: Any = None
        self.on_limited: Any = None
        self.sent: list[bytes] = []

    async def receive_frame(self, *, binary: bool) -> str | None:
        if self.frames:
            return self.frames.pop(0)
        await asyncio.Event().wait()  # a client that sends nothing more, and stays
        return None

    def allow(self) -> bool:
        return True

    def offer(self, out: Outgoing) -> bool:
        self.sent.append(out.payload)
        return True

    def close(self, code: int, reason: str = "") -> None:
        self.close_code = code


async def test_a_reader_behind_a_full_queue_ends_when_the_connection_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker stops mid-frame once the connection is closing; a reader waiting for room in the
    frame queue must stop too, or the handler never returns and the session is never closed."""
    release = asyncio.Event()

    async def slow(session: Any, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {}

    monkeypatch.setitem(commands_module.COMMANDS, "history", slow)
    frames = ['{"id":2,"history":{}}\n{"id":3,"history":{}}'] + [f'{{"id":{n},"history":{{}}}}' for n in range(4, 9)]
    conn = StubConn(frames)
    session = SimpleNamespace(
        conn=conn, wire=Wire.CENTRIFUGE, services=SimpleNamespace(settings=Settings(dev_mode=True))
    )
    client = CentrifugeClient(cast(Any, session))

    async def connected(self: CentrifugeClient) -> bool:
        return True

    monkeypatch.setattr(CentrifugeClient, "connect", connected)  # a slotted instance: on the class
    serving = asyncio.create_task(client.serve())
    await wait_for(lambda: not conn.frames)  # the reader took every frame it could, and waits
    conn.close(CloseCode.TRY_AGAIN_LATER)  # e.g. the server API disconnects the user meanwhile
    release.set()
    await asyncio.wait_for(serving, 5)


async def test_commands_run_in_order_and_an_idle_connection_keeps_no_worker_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker is a task only while frames wait: once they have run, in order, the connection
    holds its reader's task alone, as a ``/ws`` one does (docs/benchmarks.md, idle memory)."""
    ran: list[int] = []

    async def yielding(session: Any, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)  # each command yields: the order is the worker's, not the loop's
        ran.append(cmd_id)
        return {}

    async def connected(self: CentrifugeClient) -> bool:
        return True

    monkeypatch.setitem(commands_module.COMMANDS, "history", yielding)
    monkeypatch.setattr(CentrifugeClient, "connect", connected)
    conn = StubConn(['{"id":1,"history":{}}\n{"id":2,"history":{}}', '{"id":3,"history":{}}'])
    session = SimpleNamespace(
        conn=conn, wire=Wire.CENTRIFUGE, services=SimpleNamespace(settings=Settings(dev_mode=True))
    )
    client = CentrifugeClient(cast(Any, session))
    before = asyncio.all_tasks()
    serving = asyncio.create_task(client.serve())
    await wait_for(lambda: len(conn.sent) == 3)
    assert ran == [1, 2, 3]
    assert [orjson.loads(frame)["id"] for frame in conn.sent] == [1, 2, 3]
    await wait_for(lambda: asyncio.all_tasks() - before == {serving})
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
