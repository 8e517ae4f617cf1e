"""Frames and envelopes: encode once at the publisher, never per socket.

An envelope is what travels through the broker (and what channel history stores)::

    b"<exclude> <published_at> <offset> <epoch>\\n<frame>"
    b"<exclude> <published_at> <traceparent> <offset> <epoch>\\n<frame>"    (a sampled trace)

``exclude`` is the id of a connection that must not receive the frame (``-`` for none), so the
tutorial's "everyone but the sender" holds across instances. ``published_at`` is the publisher's
``time.time()``, read by the delivery-latency histogram. ``offset`` and ``epoch`` are the channel
position the broker assigned (``- -`` with history off). ``traceparent`` (W3C) is there only when
the publish was traced and sampled (app/tracing.py): the trace reaches every delivering instance,
never a client, and an untraced envelope is as it always was. ``frame`` is the exact UTF-8 JSON text
every subscriber receives; with history on, the broker has spliced ``"offset":N,"epoch":"E"`` into
it once, at publish. A listener only splits the header off; it never parses the frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from app.errors import INVALID_JSON, NOT_AN_OBJECT

NO_EXCLUDE = "-"
# The ASGI scope extension under which app.server.WebSocketProtocol offers direct frame writes.
FAST_WRITE = "switchboard.fast_write"


class Wire(IntEnum):
    """Which protocol a connection speaks; a channel message is encoded once per wire format."""

    TUTORIAL = 0  # the tutorial endpoints: each channel's frames as published
    WS = 1  # /ws (docs/protocol.md)
    CENTRIFUGE = 2  # /connection/websocket: Centrifugo's client protocol, JSON (docs/sdks.md)
    CENTRIFUGE_PROTOBUF = 3  # the same, in Protobuf (the centrifuge-protobuf subprotocol)


# How a subscription gets a channel's messages (``Subscription.encoding``), one Outgoing each per
# message per process (``Hub.deliver``): the frame as published (a tutorial endpoint; /ws on a
# channel whose frames are /ws pushes already), a tutorial frame wrapped in a /ws ``pub`` push, or
# a Centrifugo push (app/protocols/centrifuge_wire.py), or one in Protobuf (centrifuge_protobuf.py).
AS_PUBLISHED, WS_PUB, CENTRIFUGE_PUSH, CENTRIFUGE_PROTOBUF_PUSH = 0, 1, 2, 3
# The same two for a Centrifugo subscription that gets no join/leave pushes: it did not ask
# (``join_leave``) and the namespace does not force them (``force_push_join_leave``).
CENTRIFUGE_QUIET, CENTRIFUGE_PROTOBUF_QUIET = 4, 5
ENCODINGS = 6
CENTRIFUGE_ENCODINGS = frozenset(
    (CENTRIFUGE_PUSH, CENTRIFUGE_PROTOBUF_PUSH, CENTRIFUGE_QUIET, CENTRIFUGE_PROTOBUF_QUIET)
)
PROTOBUF_ENCODINGS = frozenset((CENTRIFUGE_PROTOBUF_PUSH, CENTRIFUGE_PROTOBUF_QUIET))
QUIET = {CENTRIFUGE_PUSH: CENTRIFUGE_QUIET, CENTRIFUGE_PROTOBUF_PUSH: CENTRIFUGE_PROTOBUF_QUIET}


def encoding_for(wire: Wire, tutorial: bool) -> int:
    if wire is Wire.CENTRIFUGE:
        return CENTRIFUGE_PUSH
    if wire is Wire.CENTRIFUGE_PROTOBUF:
        return CENTRIFUGE_PROTOBUF_PUSH
    return WS_PUB if wire is Wire.WS and tutorial else AS_PUBLISHED


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def header(exclude: str | None = None, published_at: float | None = None, trace: bytes | None = None) -> bytes:
    """The envelope's first fields (the trace's only if given); the broker appends the position."""
    stamp = time.time() if published_at is None else published_at
    if trace is None:
        return b"%s %.6f" % ((exclude or NO_EXCLUDE).encode(), stamp)
    return b"%s %.6f %s" % ((exclude or NO_EXCLUDE).encode(), stamp, trace)


def pack(head: bytes, frame: bytes, offset: int = 0, epoch: str = "") -> bytes:
    if not offset:
        return b"%s - -\n%s" % (head, frame)
    return b"%s %d %s\n%s" % (head, offset, epoch.encode(), frame)


def splice(frame: bytes, offset: int, epoch: str) -> bytes:
    """Add the channel position to an encoded JSON object without re-encoding it.

    The Redis broker does the same in Lua (app/broker/redis.py); epochs are hex, never escaped.
    """
    if frame[:1] != b"{" or frame[-1:] != b"}":
        raise ValueError("channel frames must be JSON objects")
    sep = b"" if frame == b"{}" else b","
    return b'%s%s"offset":%d,"epoch":"%s"}' % (frame[:-1], sep, offset, epoch.encode())


@dataclass(slots=True, frozen=True)
class Envelope:
    exclude: str | None
    published_at: float
    offset: int  # 0 when the channel keeps no history
    epoch: str
    frame: bytes
    trace: bytes | None = None  # the publish span's traceparent, when it was sampled


def unpack(envelope: bytes) -> Envelope:
    """Split the header off. Raises ValueError on a malformed envelope."""
    newline = envelope.index(b"\n")
    fields = envelope[:newline].split(b" ")
    trace = None
    if len(fields) == 4:
        exclude, stamp, offset, epoch = fields
    else:  # five fields: a traced publication (anything else raises ValueError here)
        exclude, stamp, trace, offset, epoch = fields
    excluded = exclude.decode()
    positioned = offset != b"-"
    return Envelope(
        exclude=None if excluded == NO_EXCLUDE else excluded,
        published_at=float(stamp),
        offset=int(offset) if positioned else 0,
        epoch=epoch.decode() if positioned else "",
        frame=envelope[newline + 1 :],
        trace=trace,
    )


def wrap_pub(channel_json: bytes, env: Envelope) -> bytes:
    """The ``/ws`` ``pub`` push for a tutorial channel's frame: that frame, unchanged, as ``data``.

    Built once per message per process (``Hub.deliver``), and only if a ``/ws`` member needs it.
    """
    if env.offset:
        return b'{"op":"pub","channel":%s,"offset":%d,"epoch":"%s","data":%s}' % (
            channel_json,
            env.offset,
            env.epoch.encode(),
            env.frame,
        )
    return b'{"op":"pub","channel":%s,"data":%s}' % (channel_json, env.frame)


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked WebSocket text frame (RFC 6455 5.2): what a server sends."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Outgoing:
    """One text message for many sockets: each wire format's bytes, each built once, on first use.

    ``position`` is the channel position the message moves its subscribers to, ``(channel,
    offset, epoch)``, for a positioned publication or a lost-history notice (else None): a
    stream's resume cursor (app/streams/cursor.py) follows it without parsing the frame.
    """

    __slots__ = ("_frame", "_line", "_message", "_sse", "payload", "position")

    def __init__(self, payload: bytes, position: tuple[str, int, str] | None = None) -> None:
        self.payload = payload
        self.position = position
        self._frame: bytes | None = None
        self._message: dict[str, Any] | None = None
        self._sse: bytes | None = None
        self._line: bytes | None = None

    @property
    def frame(self) -> bytes:
        """The WebSocket text frame."""
        if self._frame is None:
            self._frame = text_frame(self.payload)
        return self._frame

    @property
    def message(self) -> dict[str, Any]:
        if self._message is None:
            self._message = {"type": "websocket.send", "text": self.payload.decode()}
        return self._message

    @property
    def sse(self) -> bytes:
        """The Server-Sent Events ``data:`` line (JSON never holds a raw newline), without the
        ``id:`` and blank line that end the event: those are the stream's own."""
        if self._sse is None:
            self._sse = b"data: " + self.payload + b"\n"
        return self._sse

    @property
    def line(self) -> bytes:
        """The newline-delimited JSON object, open at its end (``...``, no ``}``): a stream adds
        its own cursor field and the closing ``}\n``."""
        if self._line is None:
            self._line = self.payload[:-1]
        return self._line


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
