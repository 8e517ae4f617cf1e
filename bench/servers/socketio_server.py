"""python-socketio with AsyncRedisManager, the Python peer: ``uvicorn bench.servers.socketio_server:app``.

Clients emit ``join`` with a room name and ``publish`` with ``{"channel", "content"}``; the server
emits ``message`` with ``{"content", "channel"}`` to the room on every instance.
"""

from __future__ import annotations

import os
from typing import Any

import socketio

manager = socketio.AsyncRedisManager(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins="*")
app = socketio.ASGIApp(sio)


@sio.event
async def join(sid: str, room: str) -> None:
    await sio.enter_room(sid, room)


@sio.event
async def publish(sid: str, data: dict[str, Any]) -> None:
    await sio.emit("message", {"content": data["content"], "channel": data["channel"]}, room=data["channel"])
