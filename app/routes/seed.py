"""The tutorial's endpoints, wire formats unchanged, correct across instances.

Each is a thin adapter over the same Session as ``/ws``: channel endpoints map onto Hub channels
(``chat``, ``room:{id}``, ``global:{ch}``), obey the same namespace rules and permission hook, and
every broadcast takes the one path through the broker. Frame shapes live in ``app/tutorial.py``.

Plain Starlette WebSocketRoutes, not FastAPI's: FastAPI's dependency machinery costs about 7 KB
of memory per open socket (exit stacks, solved dependencies) and these endpoints use none of it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app import metrics, tutorial
from app.auth import AuthError, Identity
from app.broker import BrokerUnavailable, Position
from app.channel_state import Joined, Subscription
from app.connection import Connection
from app.errors import (
    AUTH_FAILED,
    INVALID_CHANNEL,
    MISSING_CONTENT,
    PERMISSION_DENIED,
    PUBLISH_FAILED,
    RESERVED_CHANNEL,
    UNKNOWN_TYPE,
    CloseCode,
    ErrorCode,
    ProtocolError,
    error_frame,
)
from app.hub import Announce, tutorial_announce
from app.permissions import TUTORIAL_CHANNEL_PART
from app.protocols.handshake import auth_success, authenticate_first, opening, refuse, run_session
from app.reserved import reserved
from app.services import services
from app.session import Build, Session

MAX_USERNAME = 64
MISSING = object()


async def sign_in(session: Session, identity: Identity) -> bool:
    """A signed-in user, reachable by the server API; False after closing (4004 over the user's
    cluster-wide connection limit, 1013 while Redis cannot say)."""
    try:
        if await session.sign_in(identity):
            return True
        session.conn.close(CloseCode.USER_LIMIT)
    except BrokerUnavailable:
        session.conn.close(CloseCode.TRY_AGAIN_LATER)
    return False


async def join(session: Session, channel: str, resume: Position | None, first: Identity | None = None) -> int | None:
    """Subscribe (first delivering what was missed since ``resume``) and register presence.

    ``first``, a first-message identity, gets its ``auth_success`` the moment the connection is
    in the channel (``Hub.join``: before a replay, else as it joins live): whatever is published
    once the client has it reaches the client. Returns the cluster-wide count, or None after
    closing the connection: 1008 when the channel's namespace refuses this client, 1013 when
    Redis is down.
    """
    confirm: Callable[[], None] | None = None
    announce: Announce = tutorial_announce
    if first is not None:
        identity = first
        pending = [True]

        def confirm() -> None:
            if pending:
                pending.clear()
                auth_success(session.conn, identity)

        def announce(sub: Subscription, joined: Joined) -> None:
            confirm()  # a live join calls only this, at the moment it joins
            tutorial_announce(sub, joined)

    try:
        await session.subscribe(channel, resume, announce=announce, registered=confirm)
        return await session.enter_presence(channel)
    except ProtocolError as exc:
        if exc.code == ErrorCode.BAD_REQUEST:
            reason = INVALID_CHANNEL
        elif exc.message == RESERVED_CHANNEL:
            reason = RESERVED_CHANNEL
        else:
            reason = f"{PERMISSION_DENIED}: {exc.message}"
        session.conn.close(CloseCode.POLICY_VIOLATION, reason)  # Connection.close fits it in 123 bytes
    except BrokerUnavailable:
        session.conn.close(CloseCode.TRY_AGAIN_LATER)
    return None


async def leave(session: Session, channel: str) -> int | None:
    """Leave; returns the remaining count, or None if the broker is down (or it was never joined)."""
    try:
        return await session.unsubscribe(channel)
    except ProtocolError:
        return None


async def publish(session: Session, channel: str, content: Any, build: Build, *, exclude_self: bool = False) -> None:
    """A client's message: permission checks, then encode once and publish. Refusals are error frames."""
    try:
        await session.publish(channel, content, build=build, exclude_self=exclude_self)
    except BrokerUnavailable:
        session.conn.send_text(error_frame(PUBLISH_FAILED, outcome="unknown"))
    except ProtocolError as exc:
        message = f"{PERMISSION_DENIED}: {exc.message}" if exc.code == ErrorCode.PERMISSION_DENIED else exc.message
        session.conn.send_text(error_frame(message, code=int(exc.code)))


async def announce(session: Session, channel: str, name: str | None, count: int, *, joined: bool) -> None:
    """The endpoint's join or leave notice; a Redis outage is not the client's to hear about."""
    with contextlib.suppress(BrokerUnavailable, ProtocolError):
        await session.notice(channel, name, count, joined=joined)


def content_of(conn: Connection, data: dict[str, Any]) -> object:
    """The frame's ``content``; MISSING (after an error frame) when absent."""
    if "content" not in data:
        conn.send_error(MISSING_CONTENT)
        return MISSING
    return data["content"]


def username(websocket: WebSocket) -> str:
    name = (websocket.query_params.get("username") or "").strip()
    return name[:MAX_USERNAME] or "Anonymous"


def valid_part(conn: Connection, part: str) -> bool:
    """The path's room or channel name, by the tutorial's stricter rule (no ``#`` or ``,``).

    A reserved name is refused here too, although ``room:``/``global:`` put it in another
    namespace: to the tutorial's clients the path part is the channel's name."""
    if reserved(part):
        conn.close(CloseCode.POLICY_VIOLATION, RESERVED_CHANNEL)
        return False
    if TUTORIAL_CHANNEL_PART.fullmatch(part):
        return True
    conn.close(CloseCode.POLICY_VIOLATION, INVALID_CHANNEL)
    return False


async def echo(websocket: WebSocket) -> None:
    async def handler(session: Session) -> None:
        conn = session.conn
        while (text := await conn.receive_text()) is not None:
            conn.send_text("Echo: " + text)

    await run_session(websocket, "echo", handler)


async def ping(websocket: WebSocket) -> None:
    async def handler(session: Session) -> None:
        conn = session.conn
        conn.send_json({"type": "connected", "message": "WebSocket ready"})
        while (data := await conn.receive_object()) is not None:
            kind = data.get("type")
            if kind == "ping":
                conn.send_json({"type": "pong", "timestamp": data.get("timestamp"), "server_time": time.time()})
            elif kind == "close":
                conn.close(CloseCode.NORMAL)
            else:
                conn.send_error(UNKNOWN_TYPE)

    await run_session(websocket, "ping", handler)


async def chat(websocket: WebSocket) -> None:
    s = services(websocket)

    async def handler(session: Session) -> None:
        conn = session.conn
        if (opened := await opening(conn, s)) is None:
            return
        if opened.identity and not await sign_in(session, opened.identity):
            return
        name = session.display_name = opened.identity.name if opened.identity else username(websocket)
        online = await join(session, tutorial.CHAT, opened.resume, opened.identity)
        if online is None:
            return
        try:
            # The joiner is already subscribed, so it receives its own join notice too.
            await announce(session, tutorial.CHAT, name, online, joined=True)
            while (data := await conn.receive_object()) is not None:
                content = content_of(conn, data)
                if content is not MISSING:
                    build = partial(tutorial.chat_message, name)
                    await publish(session, tutorial.CHAT, content, build, exclude_self=True)
        finally:
            remaining = await leave(session, tutorial.CHAT)
            if remaining is not None:
                await announce(session, tutorial.CHAT, name, remaining, joined=False)

    await run_session(websocket, "chat", handler)


async def room(websocket: WebSocket) -> None:
    s = services(websocket)
    room_id: str = websocket.path_params["room_id"]
    channel = tutorial.ROOM + room_id
    # Optional: with ?token= (or ?auth=first), the token must be valid and frames name their sender.
    token_identity = None
    if (token := websocket.query_params.get("token")) is not None:
        try:
            token_identity = await s.auth.verify(token)
        except AuthError as exc:
            metrics.AUTH_FAILURES.labels(exc.reason).inc()
            await refuse(websocket, CloseCode.POLICY_VIOLATION, f"{AUTH_FAILED}: {exc.detail}")
            return

    async def handler(session: Session) -> None:
        conn = session.conn
        if not valid_part(conn, room_id) or (opened := await opening(conn, s)) is None:
            return
        identity = opened.identity or token_identity
        if identity is not None and not await sign_in(session, identity):
            return
        name = session.display_name = identity.name if identity else None
        members = await join(session, channel, opened.resume, opened.identity)
        if members is None:
            return
        try:
            await announce(session, channel, name, members, joined=True)
            while (data := await conn.receive_object()) is not None:
                content = content_of(conn, data)
                if content is not MISSING:
                    build = partial(tutorial.room_message, room_id, name=name)
                    await publish(session, channel, content, build, exclude_self=True)
        finally:
            remaining = await leave(session, channel)
            if remaining is not None:
                await announce(session, channel, name, remaining, joined=False)

    await run_session(websocket, "room", handler)


async def global_channel(websocket: WebSocket) -> None:
    s = services(websocket)
    name: str = websocket.path_params["channel"]
    channel = tutorial.GLOBAL + name

    async def handler(session: Session) -> None:
        conn = session.conn
        if not valid_part(conn, name) or (opened := await opening(conn, s)) is None:
            return
        if opened.identity and not await sign_in(session, opened.identity):
            return
        if await join(session, channel, opened.resume, opened.identity) is None:
            return
        while (data := await conn.receive_object()) is not None:
            content = content_of(conn, data)
            if content is not MISSING:
                await publish(session, channel, content, partial(tutorial.global_message, name))

    await run_session(websocket, "global", handler)


async def secure(websocket: WebSocket) -> None:
    s = services(websocket)
    try:
        identity = await s.auth.verify(websocket.query_params.get("token"))
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.reason).inc()
        await refuse(websocket, CloseCode.POLICY_VIOLATION, f"{AUTH_FAILED}: {exc.detail}")
        return

    async def handler(session: Session) -> None:
        conn = session.conn
        if not await sign_in(session, identity):
            return
        conn.send_json({"type": "auth_success", "user": identity.name, "user_id": identity.user_id})
        while (data := await conn.receive_object()) is not None:
            content = content_of(conn, data)
            if content is not MISSING:
                conn.send_json({"type": "echo", "from": identity.name, "content": content})

    await run_session(websocket, "secure", handler)


async def auth_first(websocket: WebSocket) -> None:
    s = services(websocket)

    async def handler(session: Session) -> None:
        conn = session.conn
        if (found := await authenticate_first(conn, s)) is None:
            return
        identity, _ = found
        if not await sign_in(session, identity):
            return
        ack = {"type": "ack", "user": identity.name}
        while await conn.receive_object() is not None:
            conn.send_json(ack)

    await run_session(websocket, "auth_first", handler)


async def with_heartbeat(websocket: WebSocket) -> None:
    s = services(websocket)

    async def handler(session: Session) -> None:
        conn = session.conn
        conn.start_heartbeat(s.settings.heartbeat_interval, s.settings.heartbeat_timeout)
        while (data := await conn.receive_object()) is not None:
            if data.get("type") == "pong":
                conn.pong()
            else:
                conn.send_json({"echo": data})

    await run_session(websocket, "heartbeat", handler)


routes = [
    WebSocketRoute("/ws/echo", echo),
    WebSocketRoute("/ws/ping", ping),
    WebSocketRoute("/ws/chat", chat),
    WebSocketRoute("/ws/room/{room_id}", room),
    WebSocketRoute("/ws/global/{channel}", global_channel),
    WebSocketRoute("/ws/secure", secure),
    WebSocketRoute("/ws/auth-first", auth_first),
    WebSocketRoute("/ws/with-heartbeat", with_heartbeat),
]
