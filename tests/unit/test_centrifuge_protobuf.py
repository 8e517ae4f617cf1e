"""Centrifugo's Protobuf encoding (app/protocols/centrifuge_protobuf.py): the framing, the
conversion to and from the JSON protocol's objects, and the Hub's Protobuf wire format (once per
message per process, recoveries collected for the reply). Replies are read back with
centrifuge-python's compiled client.proto, not with Switchboard's own schema."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from centrifuge.protocol import client_pb2

from app.broker import Position
from app.broker.memory import MemoryBroker
from app.channel_state import Joined, Subscription
from app.connection import Connection
from app.protocol import Envelope, Wire
from app.protocols import centrifuge_protobuf as pb
from app.protocols.centrifuge_protobuf import BinaryOutgoing, MalformedFrame
from tests.unit import test_recovery
from tests.unit.test_recovery import hub_with


def replies(frame: bytes) -> list[Any]:
    return [client_pb2.Reply.FromString(body) for body in pb.split(frame, 1 << 20)]


class Recording(test_recovery.Recording):
    """Keeps what it is offered, as it was offered (Protobuf, not parsed)."""

    parse = False


def test_split_reads_each_length_delimited_message_and_names_what_breaks() -> None:
    assert list(pb.split(b"\x00\x02ab\x01c", 10)) == [b"", b"ab", b"c"]
    assert list(pb.split(pb.varint(300) + b"x" * 300, 300)) == [b"x" * 300]  # a two-byte length
    for frame, reason in (
        (b"\x80", "truncated varint"),
        (b"\xff" * 11, "truncated varint"),  # longer than any varint
        (b"\x05ab", "truncated message"),
        (pb.varint(11), "message length over the limit"),
    ):
        with pytest.raises(MalformedFrame, match=reason):
            list(pb.split(frame, 10))


def test_commands_become_the_json_protocols_params() -> None:
    cmd = client_pb2.Command(id=4)
    cmd.history.channel = "chat:a"
    cmd.history.limit = -1
    cmd.history.since.offset = 2**40
    cmd.history.since.epoch = "e"
    cmd_id, method, request = pb.command(cmd.SerializeToString())
    assert (cmd_id, method) == (4, "history")
    assert request is not None
    assert pb.as_params(request) == {"channel": "chat:a", "limit": -1, "since": {"offset": 2**40, "epoch": "e"}}
    publish = client_pb2.Command(id=5)
    publish.publish.data = b"not json"
    _, _, request = pb.command(publish.SerializeToString())
    assert request is not None
    with pytest.raises(pb.BadData):
        pb.as_params(request)
    subscribe = client_pb2.Command(id=6)
    subscribe.subscribe.channel = "chat:b"
    subscribe.subscribe.tf.op = "eq"  # a field Switchboard does not declare: ignored
    _, _, request = pb.command(subscribe.SerializeToString())
    assert request is not None
    assert pb.as_params(request) == {"channel": "chat:b"}
    assert pb.command(b"") == (0, "", None)  # an empty Command: a pong
    assert pb.command(client_pb2.Command(id=9).SerializeToString()) == (9, "unknown", None)
    with pytest.raises(MalformedFrame, match="invalid protobuf"):
        pb.command(b"\xff\xff")


def test_results_become_replies_with_data_as_json_bytes() -> None:
    info = {"user": "u", "client": "c", "conn_info": {"k": 1}}
    [reply] = replies(pb.reply({"id": 3, "presence": {"presence": {"c": info}}}))
    assert reply.id == 3
    assert reply.presence.presence["c"].conn_info == b'{"k":1}'
    [nothing] = replies(pb.reply({"id": 4, "rpc": {"data": None}}))
    assert nothing.rpc.data == b"null"  # JSON's null, as the JSON protocol sends it
    [empty] = replies(pb.reply({"id": 5, "unsubscribe": {}}))
    assert empty.HasField("unsubscribe")  # an empty result is still there for the SDK to see
    [error] = replies(pb.reply({"id": 6, "error": {"code": 100, "message": "m", "temporary": True}}))
    assert (error.error.code, error.error.temporary) == (100, True)


def test_binary_outgoing_is_a_binary_websocket_frame() -> None:
    for size in (5, 300, 70_000):
        out = BinaryOutgoing(b"x" * size)
        assert out.frame[0] == 0x82
        assert out.frame.endswith(b"x" * size)
        assert out.message == {"type": "websocket.send", "bytes": b"x" * size}


async def test_protobuf_members_share_one_push_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    encode = pb.channel_push

    def counted(*args: Any, **kwargs: Any) -> bytes | None:
        calls.append(args)
        return encode(*args, **kwargs)

    monkeypatch.setattr(pb, "channel_push", counted)  # the Hub calls it through the module
    hub = await hub_with(MemoryBroker())
    json_member, one, two = Recording("j"), Recording("p1"), Recording("p2")
    await hub.join(cast(Connection, json_member), "chat:x", wire=Wire.CENTRIFUGE)
    for member in (one, two):
        await hub.join(cast(Connection, member), "chat:x", wire=Wire.CENTRIFUGE_PROTOBUF)
    frame = {"op": "pub", "channel": "chat:x", "data": {"n": 1}, "info": {"user": "u", "client": "w"}}
    await hub.publish("chat:x", orjson.dumps(frame))
    assert len(calls) == 1  # encoded once, for both Protobuf members
    assert one.offered[0] is two.offered[0]
    assert isinstance(one.offered[0], BinaryOutgoing)
    [reply] = replies(one.offered[0].payload)
    assert (reply.push.channel, reply.push.pub.data, reply.push.pub.offset) == ("chat:x", b'{"n":1}', 1)
    assert (reply.push.pub.info.user, reply.push.pub.info.client) == ("u", "w")
    assert orjson.loads(json_member.offered[0].payload)["push"]["pub"]["data"] == {"n": 1}  # JSON stays JSON


async def test_a_protobuf_recovery_is_collected_as_encoded_publications() -> None:
    hub = await hub_with(MemoryBroker())
    for n in range(3):
        position = await hub.publish("chat:r", orjson.dumps({"op": "pub", "channel": "chat:r", "data": n}))
    assert position is not None
    member = Recording("p")
    collected: list[list[bytes]] = []

    def announce(sub: Subscription, joined: Joined) -> None:
        collected.append(list(sub.collected or []))

    resume = Position(1, position.epoch)
    await hub.join(cast(Connection, member), "chat:r", resume, wire=Wire.CENTRIFUGE_PROTOBUF, announce=announce)
    pubs = [client_pb2.Publication.FromString(p) for p in collected[0]]
    assert [(p.data, p.offset) for p in pubs] == [(b"1", 2), (b"2", 3)]
    assert member.offered == []  # they travel in the subscribe reply


def test_a_tutorial_frame_is_the_data_unchanged_and_join_leave_become_pushes() -> None:
    tutorial = Envelope(None, 0.0, 4, "e", b'{"type":"message","text":"hi"}')
    [reply] = replies(pb.channel_push("chat", tutorial, True) or b"")
    assert (reply.push.pub.data, reply.push.pub.offset) == (tutorial.frame, 4)  # not re-encoded
    join = {"op": "join", "channel": "c", "info": {"user": "u", "client": "k", "info": {"a": 1}}}
    [reply] = replies(pb.channel_push("c", Envelope(None, 0.0, 0, "", orjson.dumps(join)), False) or b"")
    assert (reply.push.join.info.user, reply.push.join.info.conn_info) == ("u", b'{"a":1}')
    assert pb.channel_push("c", Envelope(None, 0.0, 0, "", b"not json"), False) is None
