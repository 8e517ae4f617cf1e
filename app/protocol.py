"""Frames and envelopes: encode once at the publisher, never per socket.

An envelope is what travels through the broker::

    b"<exclude> <published_at>\\n<frame>"

``exclude`` is the id of a connection that must not receive the frame (``-`` for none), so the
tutorial's "everyone but the sender" holds across instances. ``published_at`` is the publisher's
``time.time()``, read by the delivery-latency histogram. ``frame`` is the exact UTF-8 JSON text
every subscriber receives. A listener only splits the header off; it never parses the frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import INVALID_JSON, NOT_AN_OBJECT

NO_EXCLUDE = "-"


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def pack(frame: bytes, exclude: str | None = None, published_at: float | None = None) -> bytes:
    stamp = time.time() if published_at is None else published_at
    return b"%s %.6f\n%s" % ((exclude or NO_EXCLUDE).encode(), stamp, frame)


@dataclass(slots=True, frozen=True)
class Envelope:
    exclude: str | None
    published_at: float
    frame: str


def unpack(envelope: bytes) -> Envelope:
    """Split the header off. Raises ValueError on a malformed envelope."""
    newline = envelope.index(b"\n")
    exclude, stamp = envelope[:newline].split(b" ", 1)
    excluded = exclude.decode()
    return Envelope(
        exclude=None if excluded == NO_EXCLUDE else excluded,
        published_at=float(stamp),
        frame=envelope[newline + 1 :].decode(),
    )


class BadFrame(ValueError):
    """A client frame that is not a JSON object; the message names what was wrong."""


def parse_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadFrame(INVALID_JSON) from None
    if not isinstance(value, dict):
        raise BadFrame(NOT_AN_OBJECT)
    return value
