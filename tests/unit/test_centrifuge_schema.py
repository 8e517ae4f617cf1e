"""app/protocols/centrifuge_schema.py against Centrifugo's public schema (client.proto), as
compiled into centrifuge-python's client_pb2: every field Switchboard declares has the schema's
name, number, type and cardinality, so a Protobuf SDK and Switchboard read the same bytes alike."""

from __future__ import annotations

from typing import Any

from centrifuge.protocol import client_pb2

from app.protocols.centrifuge_schema import PACKAGE, SCHEMA, messages


def _compare(ours: Any, theirs: Any, path: str) -> None:
    for field in ours.fields:
        other = theirs.fields_by_name.get(field.name)
        assert other is not None, f"{path}.{field.name} is not in client.proto"
        assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), (
            f"{path}.{field.name}"
        )
        if field.message_type is not None:
            assert field.message_type.name == other.message_type.name, f"{path}.{field.name}"
            if field.message_type.GetOptions().map_entry:
                assert other.message_type.GetOptions().map_entry, f"{path}.{field.name} is a map"
                _compare(field.message_type, other.message_type, f"{path}.{field.name}")


def test_every_message_and_field_matches_the_public_schema() -> None:
    public = client_pb2.DESCRIPTOR
    assert public.package == PACKAGE
    for name, cls in messages().items():
        assert name in public.message_types_by_name, name
        _compare(cls.DESCRIPTOR, public.message_types_by_name[name], name)
    assert len(messages()) == len(SCHEMA)


def test_bytes_written_by_the_sdk_schema_read_the_same() -> None:
    command = client_pb2.Command(id=7)
    command.subscribe.channel = "chat:a"
    command.subscribe.recover = True
    command.subscribe.offset = 2**40
    command.subscribe.epoch = "e"
    ours: Any = messages()["Command"].FromString(command.SerializeToString())
    assert (ours.id, ours.subscribe.channel, ours.subscribe.offset, ours.subscribe.recover) == (
        7,
        "chat:a",
        2**40,
        True,
    )
    assert ours.SerializeToString() == command.SerializeToString()
