"""``POST /command``: one ``/ws`` command over plain HTTP, for a client that reads over SSE.

A browser whose WebSockets cannot get through (a proxy that refuses upgrades) reads its channels
over ``/sse`` and sends what it would have sent on ``/ws`` here: ``publish``, ``history``,
``presence``, ``presence_stats`` and ``rpc``. (``subscribe``/``unsubscribe`` reopen the stream
with the new channel set and each channel's position; ``refresh`` reopens it with a fresh token.)

Each request is one short-lived Session for the token's identity, run through the same path as a
``/ws`` command: the connect hook, then the command's own permission checks, hooks and budgets
(app/protocols/switchboard_commands.py). It holds no subscription, so what ``/ws`` gives its subscribers
(presence, and publishing where ``publish = "subscribers"``) is given to whoever may subscribe to
the channel: the check ``history`` makes, and what such a caller could get over ``/ws`` anyway.
Bounds: the body is at most ``SWITCHBOARD_MAX_MESSAGE_BYTES``; each request spends from the
instance's handshake rate (a token is verified for each); each user (or anonymous caller's
address) has a bucket of ``SWITCHBOARD_RATE_LIMIT_PER_SECOND``/``_BURST`` commands, as a socket's
frames do.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.broker import BrokerUnavailable
from app.budgets import CallerRates
from app.connection import Connection, origin_allowed
from app.errors import ORIGIN_REFUSED, OUTCOME_UNKNOWN, ErrorCode, ProtocolError
from app.protocols.handshake import TOO_MANY_HANDSHAKES
from app.protocols.switchboard_commands import COMMANDS
from app.services import Services, services
from app.session import DETACHED, Session
from app.streams.endpoint import Refused, identity_of, respond_error

PATH = "/command"
# What a client on SSE can send; the others are the stream's business (see the module's doc).
OPS = frozenset({"publish", "history", "presence", "presence_stats", "rpc"})


def rates_of(s: Services) -> CallerRates:
    if s.command_rates is None:  # a Services not made by Services.build
        s.command_rates = CallerRates(s.settings.rate_limit_per_second, s.settings.rate_limit_burst)
    return s.command_rates


async def read_body(receive: Receive, limit: int) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refused(ErrorCode.BAD_REQUEST, "the request ended before its body")
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            raise Refused(ErrorCode.LIMIT_EXCEEDED, f"the command is over {limit} bytes", 413)
    return body


def parse(body: bytes) -> dict[str, object]:
    try:
        frame = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refused(ErrorCode.BAD_REQUEST, "expected a JSON object") from None
    if not isinstance(frame, dict):
        raise Refused(ErrorCode.BAD_REQUEST, "expected a JSON object")
    op = frame.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise Refused(ErrorCode.UNKNOWN_OP, f"op must be one of {', '.join(sorted(OPS))}", 400)
    return frame


async def run(session: Session, frame: dict[str, object]) -> bytes:
    """The command's ok reply, as ``/ws`` would send it without its ``id``."""
    op = frame["op"]
    assert isinstance(op, str)
    try:
        await session.permissions.check_connect(session)
        result = await COMMANDS[op](session, 0, dict(frame))
    except ProtocolError as exc:
        raise Refused(exc.wire_code, exc.message) from None
    except BrokerUnavailable:
        message = OUTCOME_UNKNOWN if op == "publish" else "broker unavailable: try again"
        raise Refused(ErrorCode.NOT_AVAILABLE, message) from None
    if isinstance(result, bytes):  # history: spliced as /ws sends it, with id 0
        return b'{"ok":true,' + result.split(b'"ok":true,', 1)[1]
    return orjson.dumps({"ok": True, **(result or {})})


async def preflight(request: Request, s: Services, send: Send) -> None:
    """CORS: a page on an allowed origin may POST JSON with an Authorization header."""
    headers = [(b"content-length", b"0")]
    origin = request.headers.get("origin")
    if origin is not None and origin_allowed(request, s.settings.allowed_origins):
        headers += [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", b"POST"),
            (b"access-control-allow-headers", b"authorization, content-type"),
            (b"access-control-max-age", b"600"),
            (b"vary", b"origin"),
        ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The raw ASGI endpoint (app/main.py calls it, as it does the streams)."""
    request = Request(scope, receive, send)
    s = services(request)
    session: Session | None = None
    if request.method == "OPTIONS":
        await preflight(request, s, send)
        return
    try:
        if request.method != "POST":
            raise Refused(ErrorCode.BAD_REQUEST, "commands are sent with POST", 405, Allow="POST")
        if not origin_allowed(request, s.settings.allowed_origins):
            raise Refused(ErrorCode.PERMISSION_DENIED, ORIGIN_REFUSED)
        if not s.handshakes.admit():
            raise Refused(ErrorCode.TOO_MANY_REQUESTS, TOO_MANY_HANDSHAKES, Retry_After="1")
        frame = parse(await read_body(receive, s.settings.max_message_bytes))
        session = Session(Connection(request, DETACHED, s.settings), s, ws=True, refreshable=False)
        identity, refresh = await identity_of(request, s, session)
        if refresh is not None:
            refresh.stop()  # a proxied identity lives for this one request
        caller = identity.user_id or f"anonymous {request.client.host if request.client else ''}"
        if not rates_of(s).admit(caller):
            raise Refused(ErrorCode.TOO_MANY_REQUESTS, "rate limit exceeded", 429, Retry_After="1")
        session.set_identity(identity)
        body = await run(session, frame)
    except Refused as exc:
        await respond_error(send, exc)
        return
    finally:
        if session is not None:
            await session.close()  # cancels the expiry timer set_identity started
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    origin = request.headers.get("origin")
    if origin is not None:  # admitted above: an allowed or same origin may read the reply
        headers += [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
