"""Centrifugo's JSON protocol with ``delta: "fossil"`` negotiated: how its Publications look.

A subscriber that negotiated delta decodes every Publication's ``data`` as a JSON *string*: the
data's JSON text when the Publication is full, or a Fossil delta (app/fossil.py) against the
previous Publication's text when it says ``delta: true``. Both SDKs keep that text as the next
base, so a delta is only valid for a subscriber whose last Publication was the previous one on
the channel (``DeltaStream`` in app/delta.py decides; this module only shapes the bytes).
"""

from __future__ import annotations

from typing import Any

import orjson

from app import fossil
from app.protocol import Envelope
from app.protocols.centrifuge_wire import channel_publication, channel_push, publication

# Above this, a publication is always sent full: the encoder's walk is bounded (app/fossil.py), but
# its checksum and prefix scans are not, and they run on the event loop.
MAX_DELTA_BYTES = 256 * 1024


def parts(env: Envelope, tutorial: bool) -> tuple[bytes, dict[str, Any]] | None:
    """(the data's JSON text, the Publication's other fields), or None if not a publication."""
    try:
        frame = orjson.loads(env.frame)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(frame, dict):
        return None
    if tutorial:  # the tutorial's frame is the data, as on the plain JSON wire
        return orjson.dumps(frame), ({"offset": env.offset} if env.offset else {})
    if frame.get("op") != "pub":
        return None
    pub = publication(frame, env.offset)
    return orjson.dumps(pub.pop("data")), pub


def full(data: bytes, rest: dict[str, Any]) -> bytes:
    """A full Publication for a delta subscriber: its data's JSON text as a string."""
    return orjson.dumps({"data": data.decode(), **rest})


def delta(base: bytes, data: bytes, rest: dict[str, Any]) -> bytes | None:
    """A delta Publication turning ``base`` into ``data``; None if it would not be smaller than
    the full one (then the full one is sent), or if either is over ``MAX_DELTA_BYTES``."""
    if len(data) > MAX_DELTA_BYTES or len(base) > MAX_DELTA_BYTES:
        return None
    patch = fossil.encode(base, data, utf8=True)
    if len(patch) >= len(data):
        return None
    return orjson.dumps({"data": patch.decode(), **rest, "delta": True})


def wrap(channel_json: bytes, pub: bytes) -> bytes:
    return b'{"push":{"channel":%s,"pub":%s}}' % (channel_json, pub)


def full_publication(env: Envelope, tutorial: bool) -> bytes | None:
    """A replayed message for a delta subscriber's subscribe reply (always full)."""
    found = parts(env, tutorial)
    if found is None:
        return channel_publication(env, tutorial)
    return full(*found)


def full_push(channel_json: bytes, env: Envelope, tutorial: bool) -> bytes | None:
    """A replayed or held-back message pushed to one delta subscriber (always full); a join or
    leave is the plain push."""
    found = parts(env, tutorial)
    if found is None:
        return channel_push(channel_json, env, tutorial)
    return wrap(channel_json, full(*found))
