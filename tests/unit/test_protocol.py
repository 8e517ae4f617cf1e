from __future__ import annotations

import pytest

from app.errors import INVALID_JSON, NOT_AN_OBJECT
from app.protocol import BadFrame, encode, pack, parse_object, unpack


def test_envelope_round_trip_keeps_the_frame_bytes() -> None:
    frame = encode({"content": "héllo\nworld", "channel": "c"})
    env = unpack(pack(frame, exclude="abc123", published_at=12.5))
    assert env.exclude == "abc123"
    assert env.published_at == 12.5
    assert env.frame == frame


def test_envelope_without_exclusion() -> None:
    assert unpack(pack(b"{}")).exclude is None


def test_malformed_envelope_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not found"):
        unpack(b"no header here")


@pytest.mark.parametrize(
    ("text", "message"), [("{oops", INVALID_JSON), ("[1,2]", NOT_AN_OBJECT), ('"s"', NOT_AN_OBJECT)]
)
def test_parse_object_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(BadFrame, match=message):
        parse_object(text)
