from __future__ import annotations

import orjson
import pytest

from app.errors import INVALID_JSON, NOT_AN_OBJECT
from app.protocol import BadFrame, encode, header, pack, parse_object, splice, unpack


def test_envelope_round_trip_keeps_the_frame_bytes() -> None:
    frame = encode({"content": "héllo\nworld", "channel": "c"})
    env = unpack(pack(header(exclude="abc123", published_at=12.5), frame))
    assert env.exclude == "abc123"
    assert env.published_at == 12.5
    assert (env.offset, env.epoch) == (0, "")
    assert env.frame == frame


def test_envelope_carries_the_position() -> None:
    env = unpack(pack(header(), b'{"a":1}', 42, "beef"))
    assert (env.exclude, env.offset, env.epoch, env.frame) == (None, 42, "beef", b'{"a":1}')


def test_envelope_without_exclusion() -> None:
    assert unpack(pack(header(), b"{}")).exclude is None


def test_splice_adds_the_position_to_the_encoded_object() -> None:
    frame = encode({"content": {"nested": "}"}, "channel": "c"})
    spliced = splice(frame, 7, "ab12")
    assert orjson.loads(spliced) == {"content": {"nested": "}"}, "channel": "c", "offset": 7, "epoch": "ab12"}
    assert spliced.startswith(frame[:-1])  # the publisher's bytes are kept, not re-encoded
    assert orjson.loads(splice(b"{}", 1, "e")) == {"offset": 1, "epoch": "e"}


@pytest.mark.parametrize("frame", [b"[1]", b'"s"', b""])
def test_splice_refuses_what_is_not_an_object(frame: bytes) -> None:
    with pytest.raises(ValueError, match="JSON objects"):
        splice(frame, 1, "e")


def test_malformed_envelope_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not found"):
        unpack(b"no header here")


@pytest.mark.parametrize(
    ("text", "message"), [("{oops", INVALID_JSON), ("[1,2]", NOT_AN_OBJECT), ('"s"', NOT_AN_OBJECT)]
)
def test_parse_object_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(BadFrame, match=message):
        parse_object(text)
