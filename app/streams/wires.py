"""A stream's resume cursor, and the two wire formats that carry it: SSE and NDJSON.

A one-way stream resumes from one string, whatever how many channels it reads: SSE gives a
reconnecting client only the last event's ``id`` (``Last-Event-ID``). So that string holds every
channel's position, in the order the stream names its channels (``?channel=`` or the token's
claim), never the names themselves::

    <offset>.<epoch>,<offset>.<epoch>,...      "-" for a channel with no position yet

At most ``SWITCHBOARD_STREAM_MAX_CHANNELS`` entries of at most 51 characters each (an offset is 18
digits at most, an epoch 32 hex digits), so it stays a few KB: within the 8 KB nginx gives one
request header line. It moves with every positioned message offered to the connection
(``Outgoing.position``), at offer time and in order, so an event's id is exactly what the client
has been given once that event is read.

Each message's own bytes are built once per process (``Outgoing.sse``, ``Outgoing.line``); only
the cursor is the connection's: one concatenation per message and client, never a re-encoding.
"""

from __future__ import annotations

import random

import orjson

from app.broker import Position
from app.protocol import Outgoing
from app.session import resume_from

NONE = b"-"
# SSE ``retry``: how long a browser waits before it reconnects. Spread, so that the clients of a
# stream that ended together (an instance crashed) do not all come back in the same millisecond.
RETRY_MS = (1000, 3000)
KEEPALIVE = Outgoing(b'{"op":"ping"}')


class Cursor:
    __slots__ = ("_index", "_parts", "_text")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._parts: list[bytes] = []
        self._text: bytes | None = None

    def start(self, channels: list[str], start: list[Position | None]) -> None:
        """The stream's channels, known once its identity is (they may be the token's claim)."""
        self._index = {name: i for i, name in enumerate(channels)}
        self._parts = [NONE if p is None else _entry(p.offset, p.epoch) for p in start]
        self._text = None

    def move(self, position: tuple[str, int, str] | None) -> bool:
        """Follow a message's position; False if it has none this cursor follows."""
        if position is None:
            return False
        index = self._index.get(position[0])
        if index is None:  # a channel the server API added: delivered, not resumable
            return False
        self._parts[index] = _entry(position[1], position[2])
        self._text = None
        return True

    @property
    def text(self) -> bytes:
        if self._text is None:
            self._text = b",".join(self._parts)
        return self._text


def _entry(offset: int, epoch: str) -> bytes:
    return b"%d.%s" % (offset, epoch.encode())


def parse_cursor(text: str, count: int) -> list[Position | None]:
    """The positions in a cursor for a stream of ``count`` channels. Raises ValueError."""
    parts = text.split(",")
    if len(text) > 52 * count or len(parts) != count:
        raise ValueError(f"the resume cursor must hold one position per channel of this stream ({count})")
    found: list[Position | None] = []
    for part in parts:
        if part == "-":
            found.append(None)
            continue
        offset, dot, epoch = part.partition(".")
        if not dot:
            raise ValueError("each position in the resume cursor is <offset>.<epoch> or -")
        found.append(resume_from(offset, epoch))
    return found


def close_payload(code: int, reason: str) -> bytes:
    return orjson.dumps({"op": "close", "code": code, "reason": reason})


class SseWire:
    """``text/event-stream``: each message is one event whose data is the ``/ws`` push; a
    positioned one carries the cursor as its ``id``. Keep-alives are comments."""

    __slots__ = ("cursor",)
    media_type = b"text/event-stream"

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor

    def opening(self) -> bytes:
        return b"retry: %d\n\n" % random.randint(*RETRY_MS)

    def encode(self, out: Outgoing) -> bytes:
        if out is KEEPALIVE:
            return b": ping\n\n"
        if self.cursor.move(out.position):
            return out.sse + b"id: " + self.cursor.text + b"\n\n"
        return out.sse + b"\n"

    def close_body(self, code: int, reason: str) -> bytes:
        return b"data: " + close_payload(code, reason) + b"\n\n"


class NdjsonWire:
    """``application/x-ndjson``: one ``/ws`` push per line; a positioned one carries the cursor
    as its ``cursor`` field, which ``?cursor=`` resumes from. Keep-alives are ``{"op":"ping"}``."""

    __slots__ = ("cursor",)
    media_type = b"application/x-ndjson"

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor

    def opening(self) -> bytes:
        return b""

    def encode(self, out: Outgoing) -> bytes:
        if self.cursor.move(out.position):
            return out.line + b',"cursor":"' + self.cursor.text + b'"}\n'
        return out.payload + b"\n"

    def close_body(self, code: int, reason: str) -> bytes:
        return close_payload(code, reason) + b"\n"
