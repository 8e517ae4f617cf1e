"""Centrifugo's client protocol in Protobuf: the messages of its public schema (``client.proto``
in centrifugal/protocol), with its field numbers, as protobuf message classes.

Why a table and not a generated ``_pb2.py``: the runtime's own descriptor API (``descriptor_pool``
and ``message_factory``, what generated modules call) builds the same classes from it, so there
is no protoc or grpcio-tools to pin, and no generated file to keep in step with a compiler. The
table lists only what Switchboard reads or writes; a field it leaves out is kept by the parser as
an unknown field and ignored, which is what a newer client's fields are anyway.
tests/unit/test_centrifuge_schema.py checks every field here against the schema compiled into
centrifuge-python (name, number, type, repeated), so a wrong number cannot go unnoticed.

The classes are built on first use, in a pool of their own (not the process's default pool,
where another copy of the schema, an SDK's, may be).
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

PACKAGE = "centrifugal.centrifuge.protocol"
_T = descriptor_pb2.FieldDescriptorProto
U32, U64, I32, I64 = _T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_INT32, _T.TYPE_INT64
STR, BYTES, BOOL = _T.TYPE_STRING, _T.TYPE_BYTES, _T.TYPE_BOOL
# A field is (name, number, type); the type is a scalar above, a message's name, "[Name]" for a
# repeated message, or "{Name}" / "{}" for a map of strings to that message / to strings.
Field = tuple[str, int, int | str]

_POSITION: list[Field] = [("offset", 1, U64), ("epoch", 2, STR)]
SCHEMA: dict[str, list[Field]] = {
    "Error": [("code", 1, U32), ("message", 2, STR), ("temporary", 3, BOOL)],
    "Command": [
        ("id", 1, U32),
        ("connect", 4, "ConnectRequest"),
        ("subscribe", 5, "SubscribeRequest"),
        ("unsubscribe", 6, "UnsubscribeRequest"),
        ("publish", 7, "PublishRequest"),
        ("presence", 8, "PresenceRequest"),
        ("presence_stats", 9, "PresenceStatsRequest"),
        ("history", 10, "HistoryRequest"),
        ("ping", 11, "PingRequest"),
        ("send", 12, "SendRequest"),
        ("rpc", 13, "RPCRequest"),
        ("refresh", 14, "RefreshRequest"),
        ("sub_refresh", 15, "SubRefreshRequest"),
    ],
    "Reply": [
        ("id", 1, U32),
        ("error", 2, "Error"),
        ("push", 4, "Push"),
        ("connect", 5, "ConnectResult"),
        ("subscribe", 6, "SubscribeResult"),
        ("unsubscribe", 7, "UnsubscribeResult"),
        ("publish", 8, "PublishResult"),
        ("presence", 9, "PresenceResult"),
        ("presence_stats", 10, "PresenceStatsResult"),
        ("history", 11, "HistoryResult"),
        ("ping", 12, "PingResult"),
        ("rpc", 13, "RPCResult"),
        ("refresh", 14, "RefreshResult"),
        ("sub_refresh", 15, "SubRefreshResult"),
    ],
    "Push": [
        ("id", 1, I64),
        ("channel", 2, STR),
        ("pub", 4, "Publication"),
        ("join", 5, "Join"),
        ("leave", 6, "Leave"),
        ("unsubscribe", 7, "Unsubscribe"),
        ("message", 8, "Message"),
        ("subscribe", 9, "Subscribe"),
        ("disconnect", 11, "Disconnect"),
        ("refresh", 12, "Refresh"),
    ],
    "ClientInfo": [("user", 1, STR), ("client", 2, STR), ("conn_info", 3, BYTES), ("chan_info", 4, BYTES)],
    "Publication": [
        ("data", 4, BYTES),
        ("info", 5, "ClientInfo"),
        ("offset", 6, U64),
        ("tags", 7, "{}"),
        ("delta", 8, BOOL),
        ("time", 9, I64),
        ("channel", 10, STR),
    ],
    "Join": [("info", 1, "ClientInfo")],
    "Leave": [("info", 1, "ClientInfo")],
    "Unsubscribe": [("code", 2, U32), ("reason", 3, STR)],
    "Subscribe": [
        ("recoverable", 1, BOOL),
        ("epoch", 4, STR),
        ("offset", 5, U64),
        ("positioned", 6, BOOL),
        ("data", 7, BYTES),
    ],
    "Message": [("data", 1, BYTES)],
    "Disconnect": [("code", 1, U32), ("reason", 2, STR), ("reconnect", 3, BOOL)],
    "Refresh": [("expires", 1, BOOL), ("ttl", 2, U32)],
    "ConnectRequest": [
        ("token", 1, STR),
        ("data", 2, BYTES),
        ("subs", 3, "{SubscribeRequest}"),
        ("name", 4, STR),
        ("version", 5, STR),
        ("headers", 6, "{}"),
        ("flag", 7, I64),
    ],
    "ConnectResult": [
        ("client", 1, STR),
        ("version", 2, STR),
        ("expires", 3, BOOL),
        ("ttl", 4, U32),
        ("data", 5, BYTES),
        ("subs", 6, "{SubscribeResult}"),
        ("ping", 7, U32),
        ("pong", 8, BOOL),
        ("session", 9, STR),
        ("node", 10, STR),
        ("time", 11, I64),
    ],
    "RefreshRequest": [("token", 1, STR)],
    "RefreshResult": [("client", 1, STR), ("version", 2, STR), ("expires", 3, BOOL), ("ttl", 4, U32)],
    "SubscribeRequest": [
        ("channel", 1, STR),
        ("token", 2, STR),
        ("recover", 3, BOOL),
        ("epoch", 6, STR),
        ("offset", 7, U64),
        ("data", 8, BYTES),
        ("positioned", 9, BOOL),
        ("recoverable", 10, BOOL),
        ("join_leave", 11, BOOL),
        ("delta", 12, STR),
        ("flag", 14, I64),
    ],
    "SubscribeResult": [
        ("expires", 1, BOOL),
        ("ttl", 2, U32),
        ("recoverable", 3, BOOL),
        ("epoch", 6, STR),
        ("publications", 7, "[Publication]"),
        ("recovered", 8, BOOL),
        ("offset", 9, U64),
        ("positioned", 10, BOOL),
        ("data", 11, BYTES),
        ("was_recovering", 12, BOOL),
        ("delta", 13, BOOL),
        ("id", 14, I64),
    ],
    "SubRefreshRequest": [("channel", 1, STR), ("token", 2, STR)],
    "SubRefreshResult": [("expires", 1, BOOL), ("ttl", 2, U32)],
    "UnsubscribeRequest": [("channel", 1, STR)],
    "UnsubscribeResult": [],
    "PublishRequest": [("channel", 1, STR), ("data", 2, BYTES)],
    "PublishResult": [],
    "PresenceRequest": [("channel", 1, STR)],
    "PresenceResult": [("presence", 1, "{ClientInfo}")],
    "PresenceStatsRequest": [("channel", 1, STR)],
    "PresenceStatsResult": [("num_clients", 1, U32), ("num_users", 2, U32)],
    "StreamPosition": _POSITION,
    "HistoryRequest": [("channel", 1, STR), ("limit", 7, I32), ("since", 8, "StreamPosition"), ("reverse", 9, BOOL)],
    "HistoryResult": [("publications", 1, "[Publication]"), ("epoch", 2, STR), ("offset", 3, U64)],
    "PingRequest": [],
    "PingResult": [],
    "RPCRequest": [("data", 1, BYTES), ("method", 2, STR)],
    "RPCResult": [("data", 1, BYTES)],
    "SendRequest": [("data", 1, BYTES)],
}


def _field(owner: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int | str) -> None:
    field: Any = owner.field.add(name=name, number=number, label=_T.LABEL_OPTIONAL)
    if isinstance(kind, int):
        field.type = kind
        return
    field.type = _T.TYPE_MESSAGE
    if kind.startswith("{"):  # a map: a repeated nested entry message, as protoc writes it
        entry = owner.nested_type.add(name="".join(part.capitalize() for part in name.split("_")) + "Entry")
        entry.options.map_entry = True
        _field(entry, "key", 1, STR)
        _field(entry, "value", 2, kind[1:-1] or STR)
        field.label, field.type_name = _T.LABEL_REPEATED, f".{PACKAGE}.{owner.name}.{entry.name}"
        return
    if kind.startswith("["):
        field.label, kind = _T.LABEL_REPEATED, kind[1:-1]
    field.type_name = f".{PACKAGE}.{kind}"


@functools.cache
def messages() -> dict[str, type[Message]]:
    """Every message class of SCHEMA by name, built once per process."""
    proto = descriptor_pb2.FileDescriptorProto(name="switchboard/centrifuge.proto", package=PACKAGE, syntax="proto3")
    for name, fields in SCHEMA.items():
        message = proto.message_type.add(name=name)
        for field in fields:
            _field(message, *field)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in SCHEMA}
