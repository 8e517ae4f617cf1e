"""The tutorial's endpoints, wire formats unchanged, correct across instances.

Each is a thin adapter: channel endpoints map onto Hub channels (``chat``, ``room:{id}``,
``global:{ch}``) and every broadcast takes the one path through the broker.

Plain Starlette WebSocketRoutes, not FastAPI's: FastAPI's dependency machinery costs about 7 KB
of memory per open socket (exit stacks, solved dependencies) and these endpoints use none of it.
"""

from __future__ import annotations

import time

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app import metrics
from app.auth import AuthError, verify_token
from app.connection import Connection
from app.errors import AUTH_FAILED, UNKNOWN_TYPE, CloseCode
from app.routes.session import (
    MISSING,
    authenticate_first,
    content_of,
    join,
    leave,
    opening,
    publish,
    refuse,
    run_session,
    username,
    valid_channel,
)
from app.services import services


async def echo(websocket: WebSocket) -> None:
    async def handler(conn: Connection) -> None:
        while (text := await conn.receive_text()) is not None:
            conn.send_text("Echo: " + text)

    await run_session(websocket, "echo", handler)


async def ping(websocket: WebSocket) -> None:
    async def handler(conn: Connection) -> None:
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

    async def handler(conn: Connection) -> None:
        if (opened := await opening(conn, s)) is None:
            return
        name = opened.identity.name if opened.identity else username(websocket)
        online = await join(conn, s, "chat", opened.resume)
        if online is None:
            return
        try:
            # The joiner is already subscribed, so it receives its own join notice too.
            await publish(
                conn, s, "chat", {"type": "system", "message": f"{name} joined the chat", "users_online": online}
            )
            while (data := await conn.receive_object()) is not None:
                content = content_of(conn, data)
                if content is not MISSING:
                    frame = {"type": "message", "from": name, "content": content, "timestamp": time.time()}
                    await publish(conn, s, "chat", frame, exclude=conn)
        finally:
            remaining = await leave(conn, s, "chat")
            if remaining is not None:
                frame = {"type": "system", "message": f"{name} left the chat", "users_online": remaining}
                await publish(conn, s, "chat", frame, exclude=conn)

    await run_session(websocket, "chat", handler)


async def room(websocket: WebSocket) -> None:
    s = services(websocket)
    room_id: str = websocket.path_params["room_id"]
    channel = f"room:{room_id}"
    # Optional: with ?token= (or ?auth=first), the token must be valid and frames name their sender.
    sender: str | None = None
    if (token := websocket.query_params.get("token")) is not None:
        try:
            sender = verify_token(token, s.settings).name
        except AuthError as exc:
            metrics.AUTH_FAILURES.labels(exc.reason).inc()
            await refuse(websocket, CloseCode.POLICY_VIOLATION, f"{AUTH_FAILED}: {exc.reason}")
            return

    async def handler(conn: Connection) -> None:
        if not valid_channel(conn, room_id) or (opened := await opening(conn, s)) is None:
            return
        name = opened.identity.name if opened.identity else sender
        named, user = ({"from": name}, {"user": name}) if name else ({}, {})
        members = await join(conn, s, channel, opened.resume)
        if members is None:
            return
        try:
            joined = {"type": "user_joined", "room": room_id, "members": members, **user}
            await publish(conn, s, channel, joined, exclude=conn)
            while (data := await conn.receive_object()) is not None:
                content = content_of(conn, data)
                if content is not MISSING:
                    frame = {"type": "message", "room": room_id, "content": content, **named}
                    await publish(conn, s, channel, frame, exclude=conn)
        finally:
            remaining = await leave(conn, s, channel)
            if remaining is not None:
                frame = {"type": "user_left", "room": room_id, "members": remaining, **user}
                await publish(conn, s, channel, frame, exclude=conn)

    await run_session(websocket, "room", handler)


async def global_channel(websocket: WebSocket) -> None:
    s = services(websocket)
    channel: str = websocket.path_params["channel"]
    key = f"global:{channel}"

    async def handler(conn: Connection) -> None:
        if not valid_channel(conn, channel) or (opened := await opening(conn, s)) is None:
            return
        if await join(conn, s, key, opened.resume) is None:
            return
        try:
            while (data := await conn.receive_object()) is not None:
                content = content_of(conn, data)
                if content is not MISSING:
                    await publish(conn, s, key, {"content": content, "channel": channel})
        finally:
            await leave(conn, s, key)

    await run_session(websocket, "global", handler)


async def secure(websocket: WebSocket) -> None:
    s = services(websocket)
    try:
        identity = verify_token(websocket.query_params.get("token"), s.settings)
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.reason).inc()
        await refuse(websocket, CloseCode.POLICY_VIOLATION, f"{AUTH_FAILED}: {exc.reason}")
        return

    async def handler(conn: Connection) -> None:
        conn.send_json({"type": "auth_success", "user": identity.name, "user_id": identity.user_id})
        while (data := await conn.receive_object()) is not None:
            content = content_of(conn, data)
            if content is not MISSING:
                conn.send_json({"type": "echo", "from": identity.name, "content": content})

    await run_session(websocket, "secure", handler)


async def auth_first(websocket: WebSocket) -> None:
    s = services(websocket)

    async def handler(conn: Connection) -> None:
        if (found := await authenticate_first(conn, s)) is None:
            return
        identity, _ = found
        ack = {"type": "ack", "user": identity.name}
        while await conn.receive_object() is not None:
            conn.send_json(ack)

    await run_session(websocket, "auth_first", handler)


async def with_heartbeat(websocket: WebSocket) -> None:
    s = services(websocket)

    async def handler(conn: Connection) -> None:
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
