"""``/connection/http_stream`` and ``/connection/sse``: Centrifugo's client protocol (JSON) over
one streaming HTTP response, with the commands after ``connect`` in ``POST /emulation``
(app/protocols/emulation.py). centrifuge-js falls back to them when a WebSocket cannot be had.

* ``POST /connection/http_stream``: the body is the connect command (one JSON object a line, as a
  WebSocket frame), the response ``application/x-ndjson``: one reply or push a line.
* ``GET /connection/sse?cf_connect=<the connect command>``: the response ``text/event-stream``,
  one event a reply or push, its data the JSON.

The connection is the same ``CentrifugeClient`` as on ``/connection/websocket``, with a
``StreamTransport``: its connect reply adds ``session`` and ``node``, the id an emulation request
names. Queue, slow-consumer bound, rate limit and pings are the WebSocket's (the SDK answers a
ping with ``{}`` in an emulation request). A close is a ``disconnect`` push, then the end of the
response: Centrifugo's code reaches the SDK as a close frame would; a slow consumer is cut off
without one. Admission (draining, full, handshake rate, Origin) refuses with an HTTP status, as
the one-way streams do (app/streams/endpoint.py).
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.connection import Connection
from app.errors import CENTRIFUGE_CLOSES, ErrorCode
from app.protocol import Outgoing, Wire
from app.protocols.centrifuge import MAX_QUEUED_FRAMES, CentrifugeClient
from app.protocols.centrifuge_transport import StreamTransport
from app.protocols.emulation import read_body
from app.proxy_calls import pick_headers
from app.services import services
from app.session import Session
from app.streams.endpoint import Refused, admit, open_stream, respond_error

CONNECT_PARAM = "cf_connect"


def disconnect_push(code: int, reason: str) -> bytes | None:
    """How a stream says why it ends; None for a code an SDK reads as "transport closed" (it
    reconnects), which the end of the response says as well."""
    code = CENTRIFUGE_CLOSES.get(code, code)
    if code < 3000:
        return None
    return orjson.dumps({"push": {"disconnect": {"code": code, "reason": reason}}})


class HttpStreamWire:
    """One JSON reply or push a line: built once per message per process, the newline added."""

    __slots__ = ()
    media_type = b"application/x-ndjson"

    def opening(self) -> bytes:
        return b""

    def encode(self, out: Outgoing) -> bytes:
        return out.payload + b"\n"

    def close_body(self, code: int, reason: str) -> bytes:
        push = disconnect_push(code, reason)
        return b"" if push is None else push + b"\n"


class SseWire:
    """One event a reply or push (``Outgoing.sse`` is built once per message per process)."""

    __slots__ = ()
    media_type = b"text/event-stream"

    def opening(self) -> bytes:
        return b": switchboard\n\n"  # a comment: headers and a first byte through any proxy now

    def encode(self, out: Outgoing) -> bytes:
        return out.sse + b"\n"

    def close_body(self, code: int, reason: str) -> bytes:
        push = disconnect_push(code, reason)
        return b"" if push is None else b"data: " + push + b"\n\n"


# path -> (the method it takes, the metrics endpoint label: fixed strings, the wire)
ROUTES: dict[str, tuple[str, str, type[HttpStreamWire] | type[SseWire]]] = {
    "/connection/http_stream": ("POST", "centrifuge_http_stream", HttpStreamWire),
    "/connection/sse": ("GET", "centrifuge_sse", SseWire),
}


async def connect_command(request: Request, limit: int) -> str:
    """The commands the stream opens with: the POST body, or ``?cf_connect=``."""
    if request.method == "POST":
        body = await read_body(request, limit)
        if body is None:
            raise Refused(ErrorCode.LIMIT_EXCEEDED, "the connect command is over SWITCHBOARD_MAX_MESSAGE_BYTES", 413)
        text = body.decode("utf-8", "replace")
    else:
        text = request.query_params.get(CONNECT_PARAM, "")
        if len(text.encode()) > limit:
            raise Refused(ErrorCode.LIMIT_EXCEEDED, "cf_connect is over SWITCHBOARD_MAX_MESSAGE_BYTES", 413)
    if not text.strip():
        raise Refused(ErrorCode.BAD_REQUEST, "no connect command: send it as the body, or as ?cf_connect=")
    return text


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The raw ASGI endpoint (app/main.py calls it past the middleware, as it does the streams)."""
    request = Request(scope, receive, send)
    method, label, wire_type = ROUTES[scope["path"]]
    if request.method != method:
        await respond_error(send, Refused(ErrorCode.BAD_REQUEST, f"this stream opens with {method}", 405, Allow=method))
        return
    s = services(request)
    try:
        admit(request, s)
        first = await connect_command(request, s.settings.max_message_bytes)
    except Refused as exc:
        await respond_error(send, exc)
        return
    wire = wire_type()
    conn = Connection(request, label, s.settings, wire)
    session = Session(conn, s, ws=True, wire=Wire.CENTRIFUGE)
    if s.proxies.connect_url:  # read once by the connect, as a WebSocket's handshake headers
        session.handshake = pick_headers(scope["headers"], s.proxies.headers)
    transport = StreamTransport(conn, s.emulation.node, MAX_QUEUED_FRAMES)
    transport.hand(first)
    await open_stream(scope, receive, send, conn, wire, s, credentials=True)
    s.emulation.add(transport)
    client = CentrifugeClient(session, transport)
    try:
        await conn.serve(client.serve())
    finally:
        client.close()
        transport.stop()
        s.emulation.remove(transport)
        await session.close()
        await s.hub.drop(conn)
