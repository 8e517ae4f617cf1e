"""The emulated transports' pieces in one process: the request shape, the session inbox and its
bound, the local hand-over, and how each wire frames a message and a close. Across processes,
with redis: tests/integration/test_emulation.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from app.broker.memory import MemoryBroker
from app.config import Settings
from app.connection import Connection
from app.errors import EMULATION_BUSY, EMULATION_ERRORS, EMULATION_UNKNOWN_SESSION, CloseCode
from app.hub import Hub
from app.protocol import Outgoing
from app.protocols.centrifuge_streams import HttpStreamWire, SseWire, disconnect_push
from app.protocols.centrifuge_transport import StreamTransport
from app.protocols.emulation import Emulation, parse


def stream_conn() -> Connection:
    async def send(message: dict[str, Any]) -> None:
        pass

    request = SimpleNamespace(_send=send, _receive=None, scope={})
    return Connection(cast(Any, request), "centrifuge_http_stream", Settings(dev_mode=True), HttpStreamWire())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"session":"s","node":"n"}',
        b'{"session":"s","node":"n","data":{"id":1}}',  # data is the commands as a string
        b'{"session":"","node":"n","data":""}',
        orjson.dumps({"session": "s" * 129, "node": "n", "data": ""}),
    ],
)
def test_a_request_that_is_not_session_node_and_data_as_strings_is_malformed(body: bytes) -> None:
    assert parse(body) is None


def test_a_request_is_its_session_node_and_commands() -> None:
    body = orjson.dumps({"session": "s1", "node": "a.1", "data": '{"id":2,"presence":{}}', "extra": 1})
    assert parse(body) == ("s1", "a.1", '{"id":2,"presence":{}}')


def test_every_refusal_is_a_4xx_or_503_with_a_centrifugo_code() -> None:
    for status, code in EMULATION_ERRORS.values():
        assert status in (400, 404, 413, 429, 503)
        assert 100 <= int(code) <= 112


async def test_sessions_are_unguessable_bound_and_their_inbox_is_bounded() -> None:
    emulation = Emulation(Hub(MemoryBroker()), "inst", clustered=False)
    first, second = StreamTransport(stream_conn(), emulation.node, 2), StreamTransport(stream_conn(), emulation.node, 2)
    assert first.session_id != second.session_id
    assert len(first.session_id) == 32
    assert first.connect_fields() == {"session": first.session_id, "node": emulation.node}
    emulation.add(first)
    assert await emulation.deliver(first.session_id, emulation.node, "{}") is None
    assert emulation.hand(first.session_id, "{}") is None
    assert emulation.hand(first.session_id, "{}") == EMULATION_BUSY  # two in the inbox already
    assert emulation.hand(second.session_id, "{}") == EMULATION_UNKNOWN_SESSION  # not added
    # One process and no redis: another node is nowhere.
    assert await emulation.deliver(first.session_id, "inst.other", "{}") == EMULATION_UNKNOWN_SESSION
    emulation.remove(first)
    assert emulation.hand(first.session_id, "{}") == EMULATION_UNKNOWN_SESSION  # ended with its stream


async def test_a_closed_stream_takes_no_more_commands() -> None:
    conn = stream_conn()
    transport = StreamTransport(conn, "n", 4)
    conn.close(CloseCode.NORMAL)
    assert transport.hand("{}") is False


def test_each_wire_frames_a_message_once_built_and_a_close_as_a_disconnect_push() -> None:
    out = Outgoing(b'{"push":{"channel":"c","pub":{"data":1}}}')
    assert HttpStreamWire().encode(out) == out.payload + b"\n"
    assert SseWire().encode(out) == b"data: " + out.payload + b"\n\n"
    slow = {"push": {"disconnect": {"code": 3008, "reason": "slow"}}}
    assert orjson.loads(HttpStreamWire().close_body(CloseCode.SLOW_CONSUMER, "slow")) == slow
    moved = disconnect_push(4100, "moved")
    assert moved is not None
    assert SseWire().close_body(4100, "moved") == b"data: " + moved + b"\n\n"
    # A code an SDK reads as "transport closed" needs no push: the end of the stream says it.
    assert HttpStreamWire().close_body(CloseCode.NORMAL, "") == b""
    assert disconnect_push(1000, "") is None
