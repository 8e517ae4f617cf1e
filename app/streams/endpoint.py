"""``GET /sse`` and ``GET /stream``: one-way streams of a channel set, an adapter over Session.

Everything a WebSocket client gets from the core, a stream gets the same way: the Session's
permission checks and limits, the Hub's joins and recovery, the Connection's queue, slow-consumer
bound and drain. What differs is only how bytes reach the client (app/streams/wires.py) and when
it can be refused: before the response starts, so every refusal is an HTTP status with the
protocol's error body ``{"error":{"code":C,"message":M}}``; after it, the stream ends with a
``close`` push (the WebSocket close code and reason) and the client resumes with its cursor.

A stream cannot send anything, so it cannot ``refresh``: it ends with 4002 when its token expires.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app import metrics
from app.auth import ANONYMOUS, AuthError, Identity
from app.broker import BrokerUnavailable, Position
from app.channel_state import Joined, Subscription
from app.connection import Connection, StreamWire, origin_allowed
from app.errors import ORIGIN_REFUSED, CloseCode, ErrorCode, ProtocolError, reason_for
from app.hooks import UNCHANGED
from app.hub import Announce
from app.protocol import Outgoing
from app.protocols.handshake import ACCEPTED, FULL, TOO_MANY_HANDSHAKES
from app.protocols.proxied import ProxyRefresh, connect_by_proxy, proxied_reply
from app.proxy_calls import pick_headers
from app.services import Services, services
from app.session import Session
from app.streams.wires import KEEPALIVE, Cursor, NdjsonWire, SseWire, parse_cursor

log = logging.getLogger("switchboard.streams")

STATUS: dict[int, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNKNOWN_CHANNEL: 404,
    ErrorCode.LIMIT_EXCEEDED: 429,
    ErrorCode.TOO_MANY_REQUESTS: 503,
    ErrorCode.NOT_AVAILABLE: 503,
    ErrorCode.BACKEND_UNAVAILABLE: 503,
}
WIRES: dict[str, tuple[str, type[SseWire] | type[NdjsonWire]]] = {
    "/sse": ("sse", SseWire),
    "/stream": ("http_stream", NdjsonWire),
}
# Glob characters in a channels claim: a pattern grants channels, it does not name one to read.
PATTERN = frozenset("*?[")


class Refused(Exception):
    def __init__(self, code: int, message: str, status: int | None = None, **headers: str) -> None:
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers
        self.status = status or STATUS.get(code, 400)


class OpeningWire(StreamWire, Protocol):
    """A stream's wire as its response starts: the media type, and the bytes that come first."""

    media_type: bytes

    def opening(self) -> bytes: ...


async def open_stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    conn: Connection,
    wire: OpeningWire,
    s: Services,
    *,
    credentials: bool = False,
) -> None:
    """Start an admitted stream's response and hand the Connection its request: the headers (an
    allowed or same origin may read it; ``credentials``: with its cookies too, private to it),
    the wire's opening bytes, and the Hub's attach. Every streaming endpoint opens this way."""
    request = Request(scope, receive, send)
    headers = [
        (b"content-type", wire.media_type + b"; charset=utf-8"),
        (b"cache-control", b"private, no-cache, no-store" if credentials else b"no-cache, no-store"),
        # nginx passes the body on as it comes, whatever its proxy_buffering (docs/deploy.md).
        (b"x-accel-buffering", b"no"),
        (b"x-switchboard-instance", s.settings.instance_id.encode()),
    ]
    origin = request.headers.get("origin")
    if origin is not None:  # admitted already: an allowed or same origin may read the stream
        headers += [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]
        if credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    # Nothing reads the request's headers again, and they would stay for the stream's whole life.
    scope["headers"] = []
    conn.websocket = request
    opening = wire.opening()
    if opening:
        await send({"type": "http.response.body", "body": opening, "more_body": True})
    ACCEPTED.inc()
    s.hub.attach(conn)


async def respond_error(send: Send, exc: Refused) -> None:
    metrics.COMMAND_ERRORS.labels(str(int(exc.code))).inc()
    body = orjson.dumps({"error": {"code": int(exc.code), "message": exc.message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(name.replace("_", "-").lower().encode(), value.encode()) for name, value in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def token_of(request: Request) -> str | None:
    """``Authorization: Bearer`` first (curl, fetch); else ``?token=`` (EventSource cannot set
    headers), which the log filter redacts from every request line (app/logs.py)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.query_params.get("token")


def channels_of(request: Request, identity: Identity, limit: int) -> list[str]:
    """``?channel=`` (repeated), or else the literal names in the token's ``channels`` claim."""
    named = request.query_params.getlist("channel") or [c for c in identity.channels if not PATTERN & set(c)]
    channels = list(dict.fromkeys(named))  # a channel named twice is read once
    if not channels:
        raise Refused(ErrorCode.BAD_REQUEST, "name the channels: ?channel=NAME (repeatable), or a channels claim")
    if len(channels) > limit:
        raise Refused(ErrorCode.LIMIT_EXCEEDED, f"at most {limit} channels per stream")
    return channels


def resume_of(request: Request, count: int) -> list[Position | None]:
    """Where to resume: SSE's ``Last-Event-ID`` (a browser sends it by itself), else ``?cursor=``."""
    text = request.headers.get("last-event-id") or request.query_params.get("cursor")
    if not text:
        return [None] * count
    try:
        return parse_cursor(text, count)
    except ValueError as exc:
        raise Refused(ErrorCode.BAD_REQUEST, str(exc)) from None


async def identity_of(request: Request, s: Services, session: Session) -> tuple[Identity, ProxyRefresh | None]:
    """The token's identity; without a token, the connect proxy's when one is configured (it is
    sent the allowlisted headers, the cookie among them: how ``EventSource``, which cannot set
    headers, signs in without a token in its URL), else anonymous if allowed."""
    token = token_of(request)
    if token is None and s.proxies.connect_url:
        try:
            connected = await connect_by_proxy(
                session, UNCHANGED, pick_headers(request.scope["headers"], s.proxies.headers)
            )
        except ProtocolError as exc:
            raise Refused(exc.wire_code, exc.message) from None
        # A proxied identity with an expiry is refreshed by the server (the refresh proxy), or ends 4002.
        refresh, _ = proxied_reply(session, connected, lambda: session.conn.close(CloseCode.TOKEN_EXPIRED))
        return connected.identity, refresh
    if token is None and s.settings.allow_anonymous:
        return ANONYMOUS, None
    try:
        return await s.auth.verify(token), None
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.reason).inc()
        if exc.reason == "expired":
            raise Refused(ErrorCode.TOKEN_EXPIRED, "token expired") from None
        raise Refused(ErrorCode.UNAUTHORIZED, f"token required or bad: {exc.detail}") from None


def admit(request: Request, s: Services) -> None:
    """The handshake's checks, in its order: draining or full, the handshake rate, the Origin."""
    if s.draining:
        metrics.CONNECTS.labels("refused_draining").inc()
        raise Refused(ErrorCode.NOT_AVAILABLE, reason_for(CloseCode.SERVICE_RESTART))
    if len(s.hub.connections) >= s.settings.max_connections:
        metrics.CONNECTS.labels("refused_full").inc()
        raise Refused(ErrorCode.NOT_AVAILABLE, FULL)
    if not s.handshakes.admit():
        metrics.CONNECTS.labels("refused_rate").inc()
        raise Refused(ErrorCode.TOO_MANY_REQUESTS, TOO_MANY_HANDSHAKES, Retry_After="1")
    if not origin_allowed(request, s.settings.allowed_origins):
        metrics.CONNECTS.labels(f"refused_{int(CloseCode.POLICY_VIOLATION)}").inc()
        raise Refused(ErrorCode.PERMISSION_DENIED, ORIGIN_REFUSED)


async def check(session: Session, identity: Identity, channels: list[str]) -> None:
    """The connect and every subscribe checked, and the user's slot taken, before the response
    starts: a refusal is then an HTTP status, which EventSource does not retry."""
    session.set_identity(identity)
    try:
        await session.permissions.check_connect(session)
        for channel in channels:
            opts = session.permissions.options(channel)
            await session.permissions.check_subscribe(session, channel, opts, None)
        if not await session.sign_in(identity):
            raise Refused(ErrorCode.LIMIT_EXCEEDED, "this user has too many connections")
    except ProtocolError as exc:
        raise Refused(exc.wire_code, exc.message) from None
    except BrokerUnavailable:
        raise Refused(ErrorCode.NOT_AVAILABLE, "broker unavailable: try again") from None


def subscribed(conn: Connection, channel: str) -> Announce:
    """The ``/ws`` subscribe reply's fields as a ``subscribed`` push, positioned: the cursor
    takes the join's position, so even a stream that receives nothing has a resume point."""

    def announce(sub: Subscription, joined: Joined) -> None:
        p = joined.position
        fields: dict[str, Any] = {"op": "subscribed", "channel": channel, "offset": p.offset, "epoch": p.epoch}
        if joined.history_off:
            fields.update(recovered=False, reason="history off")
        elif joined.ok is not None:
            fields.update(recovered=joined.ok, **({"count": joined.count} if joined.ok else {"reason": joined.reason}))
        conn.offer(Outgoing(orjson.dumps(fields), (channel, p.offset, p.epoch)))

    return announce


async def run(session: Session, channels: list[str], resume: list[Position | None]) -> None:
    """Join each channel (replaying what the cursor missed), then hold until the stream ends.

    The disconnect is watched from the start: a client that goes away during a long replay stops
    it at its next page (``Connection.drained`` raises ConnectionGone), not after all of it."""
    conn, interval = session.conn, session.services.settings.ping_interval
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def keepalive() -> None:
        nonlocal timer
        conn.offer(KEEPALIVE)
        timer = loop.call_later(interval, keepalive)

    timer = loop.call_later(interval, keepalive)
    gone = asyncio.ensure_future(conn.wait_disconnect())
    try:
        for channel, position in zip(channels, resume, strict=True):
            if gone.done():
                return
            try:
                opts = await session.subscribe(channel, position, announce=subscribed(conn, channel))
                await session.announce_join(channel, opts)  # in presence, as a /ws subscriber is
            except ProtocolError as exc:  # allowed a moment ago, refused now (a hook, a race)
                push = {"op": "error", "channel": channel, "code": int(exc.code), "message": exc.message}
                conn.send_json(push)
            except BrokerUnavailable:
                conn.close(CloseCode.TRY_AGAIN_LATER)
                break
        await gone
    finally:
        timer.cancel()
        gone.cancel()


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """The raw ASGI endpoint (app/main.py calls it past the middleware, as it does /ws)."""
    request = Request(scope, receive, send)
    if request.method != "GET":
        await respond_error(send, Refused(ErrorCode.BAD_REQUEST, "streams are read with GET", 405, Allow="GET"))
        return
    label, wire_type = WIRES[scope["path"]]
    s = services(request)
    session: Session | None = None
    try:
        admit(request, s)
        wire = wire_type(Cursor())
        conn = Connection(request, label, s.settings, wire)
        session = Session(conn, s, ws=True, refreshable=False)
        identity, refresh = await identity_of(request, s, session)
        channels = channels_of(request, identity, s.settings.stream_max_channels)
        resume = resume_of(request, len(channels))
        wire.cursor.start(channels, resume)
        await check(session, identity, channels)
    except Refused as exc:
        if session is not None:
            await session.close()  # frees a slot sign_in took
        await respond_error(send, exc)
        return
    await open_stream(scope, receive, send, conn, wire, s)
    try:
        await conn.serve(run(session, channels, resume))
    finally:
        if refresh is not None:
            refresh.stop()
        await session.close()
        await s.hub.drop(conn)
