"""What every WebSocket endpoint shares before and after its adapter runs: handshake checks,
accept, one Session for the socket's life, clean-up; and the tutorial's first-message auth."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from app import metrics, tracing
from app.auth import AuthError, Identity
from app.broker import Position
from app.connection import Connection, origin_allowed
from app.errors import (
    AUTH_FAILED,
    AUTH_REQUIRED,
    AUTH_TIMEOUT,
    INVALID_TOKEN,
    ORIGIN_REFUSED,
    CloseCode,
    reason_for,
)
from app.protocol import BadFrame, Wire, parse_object
from app.proxy_calls import pick_headers
from app.services import Services, services
from app.session import Session, resume_from

SessionHandler = Callable[[Session], Awaitable[None]]
FULL = "Instance full: SWITCHBOARD_MAX_CONNECTIONS reached, try another"
ACCEPTED = metrics.CONNECTS.labels("accepted")
TOO_MANY_HANDSHAKES = "Too many handshakes: SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND reached, retry"


async def refuse(websocket: WebSocket, code: CloseCode, reason: str, subprotocol: str | None = None) -> None:
    """Refuse a client with a close code and reason.

    We accept first and close at once: browsers see a handshake rejection only as 1006, with no
    status or body, whereas a close frame carries the code and reason to every client. (With the
    subprotocol it asked for: a browser fails a handshake that does not select it, as 1006 too.)
    """
    metrics.CONNECTS.labels(f"refused_{int(code)}").inc()
    await websocket.accept(subprotocol)
    await websocket.close(code=code, reason=reason)


async def run_session(
    websocket: WebSocket,
    endpoint: str,
    handler: SessionHandler,
    *,
    ws: bool = False,
    wire: Wire | None = None,
    subprotocol: str | None = None,
) -> None:
    s = services(websocket)
    # The span covers the handshake only (admission to accept), not the socket's life.
    with tracing.span("ws handshake", "server", {"switchboard.endpoint": endpoint}, websocket.scope["headers"]) as span:
        session = await _admit(websocket, s, endpoint, ws, wire, subprotocol)
        if span is not None:
            span.set_attribute("switchboard.accepted", session is not None)
    if session is None:
        return
    conn = session.conn
    try:
        await conn.serve(handler(session))
    finally:
        await session.close()
        await s.hub.drop(conn)


async def _admit(
    websocket: WebSocket, s: Services, endpoint: str, ws: bool, wire: Wire | None, subprotocol: str | None
) -> Session | None:
    """The accepted socket's Session, attached to the Hub; or None after a refusal. ``subprotocol``:
    the one the client asked for that the handshake selects (Centrifugo's Protobuf)."""
    full = len(s.hub.connections) >= s.settings.max_connections
    # An HTTP 503 (not a close frame) so that a load balancer retries another instance.
    if s.draining or full:
        metrics.CONNECTS.labels("refused_full" if full and not s.draining else "refused_draining").inc()
        body = {"error": FULL if full and not s.draining else reason_for(CloseCode.SERVICE_RESTART)}
        await websocket.send_denial_response(JSONResponse(body, status_code=503))
        return None
    if not s.handshakes.admit():
        metrics.CONNECTS.labels("refused_rate").inc()
        denial = JSONResponse({"error": TOO_MANY_HANDSHAKES}, status_code=503, headers={"Retry-After": "1"})
        await websocket.send_denial_response(denial)
        return None
    if not origin_allowed(websocket, s.settings.allowed_origins):
        await refuse(websocket, CloseCode.POLICY_VIOLATION, ORIGIN_REFUSED, subprotocol)
        return None
    conn = Connection(websocket, endpoint, s.settings)
    session = Session(conn, s, ws=ws, wire=wire)
    # Which instance serves this socket: visible in browser dev tools and to proxies' tests.
    await websocket.accept(subprotocol, headers=[(b"x-switchboard-instance", s.settings.instance_id.encode())])
    if session.ws and s.proxies.connect_url:  # /ws, and Centrifugo's protocol
        session.handshake = pick_headers(websocket.scope["headers"], s.proxies.headers)
    # Nothing reads a socket's request headers after its handshake, and they would stay for its
    # whole life: about 0.7 KB of small objects per open socket.
    websocket.scope["headers"] = []
    ACCEPTED.inc()
    s.hub.attach(conn)
    return session


def auth_success(conn: Connection, identity: Identity) -> None:
    conn.send_json({"type": "auth_success", "user": identity.name, "user_id": identity.user_id})


async def authenticate_first(
    conn: Connection, s: Services, *, confirm: bool = True
) -> tuple[Identity, dict[str, Any]] | None:
    """The tutorial's first-message flow: ``auth_required``, then ``{"type":"auth","token":JWT,...}``.

    Returns the identity and the whole auth message (it may carry ``since``/``epoch``), or None
    after an error frame and 1008. ``confirm=False`` leaves ``auth_success`` to the caller: a
    channel endpoint sends it once the client is in its channel (``seed.join``).
    """
    conn.send_json({"type": "auth_required"})
    try:
        async with asyncio.timeout(s.settings.auth_timeout):
            text = await conn.receive_text()
    except TimeoutError:
        metrics.AUTH_FAILURES.labels("timeout").inc()
        conn.close(CloseCode.POLICY_VIOLATION, AUTH_TIMEOUT)
        return None
    if text is None:
        return None
    try:
        data = parse_object(text)
    except BadFrame:
        data = {}
    token = data.get("token")
    if data.get("type") != "auth" or not isinstance(token, str):
        metrics.AUTH_FAILURES.labels("missing").inc()
        conn.send_error(AUTH_REQUIRED)
        conn.close(CloseCode.POLICY_VIOLATION, AUTH_REQUIRED)
        return None
    try:
        identity = await s.auth.verify(token)
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.reason).inc()
        conn.send_error(INVALID_TOKEN)
        conn.close(CloseCode.POLICY_VIOLATION, AUTH_FAILED)
        return None
    if confirm:
        auth_success(conn, identity)
    return identity, data


@dataclass(frozen=True, slots=True)
class Opening:
    """How a channel session starts: who (first-message auth only) and where to resume from.

    A first-message identity is not confirmed yet: ``auth_success`` goes out once the client is
    in the channel, so that a client that acts on it (publishes, has its backend publish) cannot
    race its own join and miss the first message of a channel it joined live."""

    identity: Identity | None
    resume: Position | None


async def opening(conn: Connection, s: Services) -> Opening | None:
    """``?auth=first``: identity and position from the first message; else the position from the query.

    None means the connection was closed with a reason (bad token, bad position).
    """
    query = conn.websocket.query_params
    identity: Identity | None = None
    if query.get("auth") == "first":
        found = await authenticate_first(conn, s, confirm=False)
        if found is None:
            return None
        identity, data = found
        since, epoch = data.get("since"), data.get("epoch")
    else:
        since, epoch = query.get("since"), query.get("epoch")
    try:
        return Opening(identity, resume_from(since, epoch))
    except ValueError as exc:
        if identity is not None:  # the token was good: it is the position that is refused
            auth_success(conn, identity)
        conn.close(CloseCode.POLICY_VIOLATION, str(exc))
        return None
