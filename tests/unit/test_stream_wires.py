"""The streams' resume cursor and wire formats (app/streams/wires.py)."""

from __future__ import annotations

import orjson
import pytest

from app.broker import Position
from app.protocol import Outgoing
from app.streams.wires import KEEPALIVE, Cursor, NdjsonWire, SseWire, parse_cursor

MAX_OFFSET = 10**18 - 1
MAX_EPOCH = "f" * 32


def test_a_cursor_round_trips_and_stays_within_52_bytes_a_channel() -> None:
    channels = [f"c{i}" for i in range(32)]
    cursor = Cursor()
    cursor.start(channels, [None] * 32)
    assert cursor.text == b",".join([b"-"] * 32)
    for name in channels:
        assert cursor.move((name, MAX_OFFSET, MAX_EPOCH))
    assert len(cursor.text) <= 52 * len(channels)
    parsed = parse_cursor(cursor.text.decode(), len(channels))
    assert parsed == [Position(MAX_OFFSET, MAX_EPOCH)] * 32


def test_a_cursor_ignores_channels_it_does_not_follow() -> None:
    cursor = Cursor()
    cursor.start(["a", "b"], [Position(3, "e1"), None])
    assert not cursor.move(("server-added", 9, "e9"))
    assert not cursor.move(None)
    assert cursor.text == b"3.e1,-"


@pytest.mark.parametrize(
    "text",
    ["", "1.e1", "1.e1,2.e2,3.e3", "x.e1,-", "1.E1,-", "5.,-", "1e1,-", "1." + "f" * 33 + ",-", "-1.e1,-"],
)
def test_a_bad_cursor_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_cursor(text, 2)


def test_sse_events_carry_the_cursor_only_when_it_moves() -> None:
    cursor = Cursor()
    cursor.start(["news"], [None])
    wire = SseWire(cursor)
    pub = Outgoing(b'{"op":"pub","channel":"news","data":1,"offset":4,"epoch":"ab"}', ("news", 4, "ab"))
    assert wire.encode(pub) == b'data: {"op":"pub","channel":"news","data":1,"offset":4,"epoch":"ab"}\nid: 4.ab\n\n'
    assert wire.encode(Outgoing(b'{"op":"leave"}')) == b'data: {"op":"leave"}\n\n'  # the id stays
    assert wire.encode(KEEPALIVE) == b": ping\n\n"
    assert wire.close_body(1012, "bye") == b'data: {"op":"close","code":1012,"reason":"bye"}\n\n'


def test_ndjson_lines_are_json_with_the_cursor_spliced_in() -> None:
    cursor = Cursor()
    cursor.start(["a", "b"], [Position(1, "e"), None])
    wire = NdjsonWire(cursor)
    pub = Outgoing(b'{"op":"pub","channel":"b","offset":2,"epoch":"f"}', ("b", 2, "f"))
    line = wire.encode(pub)
    assert line.endswith(b"\n")
    assert orjson.loads(line) == {"op": "pub", "channel": "b", "offset": 2, "epoch": "f", "cursor": "1.e,2.f"}
    assert orjson.loads(wire.encode(KEEPALIVE)) == {"op": "ping"}
