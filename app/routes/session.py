"""What every WebSocket endpoint shares: handshake checks, accept, serve, clean-up."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from app import metrics
from app.broker import BrokerUnavailable, Position
from app.connection import Connection, Handler, origin_allowed
from app.errors import INVALID_RESUME, MISSING_CONTENT, ORIGIN_REFUSED, PUBLISH_FAILED, CloseCode, reason_for
from app.protocol import encode
from app.services import Services, services

CHANNEL_NAME = re.compile(r"^[\w.:@~-]{1,128}$")
MAX_USERNAME = 64
EPOCH = re.compile(r"^[0-9a-f]{1,32}$")
OFFSET = re.compile(r"^[0-9]{1,18}$")
MISSING = object()


async def refuse(websocket: WebSocket, code: CloseCode, reason: str) -> None:
    """Refuse a client with a close code and reason.

    We accept first and close at once: browsers see a handshake rejection only as 1006, with no
    status or body, whereas a close frame carries the code and reason to every client.
    """
    metrics.CONNECTS.labels(f"refused_{int(code)}").inc()
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


async def run_session(websocket: WebSocket, endpoint: str, handler: Handler) -> None:
    s = services(websocket)
    if s.draining:
        # An HTTP 503 (not a close frame) so that a load balancer retries another instance.
        metrics.CONNECTS.labels("refused_draining").inc()
        body = {"error": reason_for(CloseCode.SERVICE_RESTART)}
        await websocket.send_denial_response(JSONResponse(body, status_code=503))
        return
    if not origin_allowed(websocket, s.settings.allowed_origins):
        await refuse(websocket, CloseCode.POLICY_VIOLATION, ORIGIN_REFUSED)
        return
    conn = Connection(websocket, endpoint, s.settings)
    # Which instance serves this socket: visible in browser dev tools and to proxies' tests.
    await websocket.accept(headers=[(b"x-switchboard-instance", s.settings.instance_id.encode())])
    metrics.CONNECTS.labels("accepted").inc()
    s.hub.attach(conn)
    try:
        await conn.serve(handler)
    finally:
        await s.hub.drop(conn)


def valid_channel(conn: Connection, name: str) -> bool:
    if CHANNEL_NAME.match(name):
        return True
    conn.close(CloseCode.POLICY_VIOLATION, "Invalid channel name")
    return False


def resume_from(query: Mapping[str, str]) -> Position | None:
    """The ``since``/``epoch`` query parameters of a resuming client. Raises ValueError."""
    since, epoch = query.get("since"), query.get("epoch")
    if since is None and epoch is None:
        return None
    if since is None or epoch is None or not OFFSET.match(since) or not EPOCH.match(epoch):
        raise ValueError(INVALID_RESUME)
    return Position(int(since), epoch)


async def join(conn: Connection, s: Services, channel: str) -> int | None:
    """Subscribe (recovering from ``since``/``epoch`` if given) and register presence.

    Returns the cluster-wide count, or None after closing the connection (1013 or 1008).
    """
    try:
        resume = resume_from(conn.websocket.query_params)
    except ValueError as exc:
        conn.close(CloseCode.POLICY_VIOLATION, str(exc))
        return None
    try:
        await s.hub.join(conn, channel, resume)
        return await s.presence.join(channel, conn.id)
    except BrokerUnavailable:
        conn.close(CloseCode.TRY_AGAIN_LATER)
        return None


async def leave(conn: Connection, s: Services, channel: str) -> int | None:
    """Unregister presence; returns the remaining count, or None if the broker is down."""
    try:
        return await s.presence.leave(channel, conn.id)
    except BrokerUnavailable:
        return None


async def publish(
    conn: Connection, s: Services, channel: str, payload: dict[str, Any], exclude: Connection | None = None
) -> None:
    """Encode once and publish; a broker outage becomes an error frame for this client only."""
    try:
        await s.hub.publish(channel, encode(payload), exclude)
    except BrokerUnavailable:
        conn.send_error(PUBLISH_FAILED)


def content_of(conn: Connection, data: dict[str, Any]) -> object:
    """The frame's ``content``; MISSING (after an error frame) when absent."""
    if "content" not in data:
        conn.send_error(MISSING_CONTENT)
        return MISSING
    return data["content"]


def username(websocket: WebSocket) -> str:
    name = (websocket.query_params.get("username") or "").strip()
    return name[:MAX_USERNAME] or "Anonymous"
