"""Centrifugo's client protocol has two encodings, JSON and Protobuf, and one set of commands
(app/protocols/centrifuge_commands.py): a command's result is a JSON protocol object, and the
connection's Format writes it. Which Format follows from the connection's Wire."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from app.connection import Connection
from app.protocol import Outgoing, Wire
from app.protocols import centrifuge_protobuf as pb
from app.protocols.centrifuge_wire import push as json_push


class Format(Protocol):
    binary: bool
    ping: bytes

    def outgoing(self, payload: bytes) -> Outgoing: ...

    def reply(self, cmd_id: int, method: str, result: dict[str, Any]) -> bytes: ...

    def error(self, cmd_id: int | None, error: dict[str, Any]) -> bytes: ...

    def push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes: ...

    def subscribe_reply(self, cmd_id: int, result: dict[str, Any], pubs: list[bytes]) -> bytes:
        """``pubs``: a recovery's publications, each encoded once already (Hub.join collects them)."""
        ...


class JsonFormat:
    binary = False
    ping = b"{}"

    def outgoing(self, payload: bytes) -> Outgoing:
        return Outgoing(payload)

    def reply(self, cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
        return orjson.dumps({"id": cmd_id, method: result})

    def error(self, cmd_id: int | None, error: dict[str, Any]) -> bytes:
        return orjson.dumps({"id": cmd_id, "error": error} if cmd_id else {"error": error})

    def push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes:
        return json_push(channel, kind, body)

    def subscribe_reply(self, cmd_id: int, result: dict[str, Any], pubs: list[bytes]) -> bytes:
        body = orjson.dumps(result)
        if pubs:  # spliced in, not re-encoded
            body = body[:-1] + (b"," if result else b"") + b'"publications":[' + b",".join(pubs) + b"]}"
        return b'{"id":%d,"subscribe":%s}' % (cmd_id, body)


class ProtobufFormat:
    binary = True
    ping = pb.PING

    def outgoing(self, payload: bytes) -> Outgoing:
        return pb.BinaryOutgoing(payload)

    def reply(self, cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
        return pb.reply({"id": cmd_id, method: result})

    def error(self, cmd_id: int | None, error: dict[str, Any]) -> bytes:
        return pb.reply({"id": cmd_id, "error": error})

    def push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes:
        return pb.reply({"push": {"channel": channel, kind: body}})

    def subscribe_reply(self, cmd_id: int, result: dict[str, Any], pubs: list[bytes]) -> bytes:
        return pb.reply({"id": cmd_id, "subscribe": {**result, "publications": pubs}})


CENTRIFUGE_WIRES = frozenset((Wire.CENTRIFUGE, Wire.CENTRIFUGE_PROTOBUF))
JSON: Format = JsonFormat()
PROTOBUF: Format = ProtobufFormat()


def format_for(wire: Wire) -> Format:
    return PROTOBUF if wire is Wire.CENTRIFUGE_PROTOBUF else JSON


def send(conn: Connection, wire: Wire, payload: bytes) -> None:
    conn.offer(format_for(wire).outgoing(payload))
