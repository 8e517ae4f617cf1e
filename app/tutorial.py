"""The tutorial's channels and their frames: one canonical frame per publication.

``/ws/chat`` is channel ``chat``, ``/ws/room/{id}`` is ``room:{id}`` and ``/ws/global/{ch}`` is
``global:{ch}``. Whoever publishes there (the tutorial endpoint, a ``/ws`` client, the HTTP API)
publishes that endpoint's own frame, built here, so every subscriber, tutorial or ``/ws``, gets the
same bytes: tutorial clients as they are, ``/ws`` clients as a ``pub`` push's ``data``.
"""

from __future__ import annotations

import time
from typing import Any

from app.auth import Identity

CHAT = "chat"
ROOM = "room:"
GLOBAL = "global:"


def is_tutorial(channel: str) -> bool:
    return channel == CHAT or channel.startswith((ROOM, GLOBAL))


def chat_message(name: str, content: Any) -> dict[str, Any]:
    return {"type": "message", "from": name, "content": content, "timestamp": time.time()}


def chat_system(message: str, online: int) -> dict[str, Any]:
    return {"type": "system", "message": message, "users_online": online}


def room_message(room_id: str, content: Any, name: str | None) -> dict[str, Any]:
    return {"type": "message", "room": room_id, "content": content, **({"from": name} if name else {})}


def room_membership(kind: str, room_id: str, members: int, name: str | None) -> dict[str, Any]:
    """``user_joined`` or ``user_left``."""
    return {"type": kind, "room": room_id, "members": members, **({"user": name} if name else {})}


def global_message(channel: str, content: Any) -> dict[str, Any]:
    return {"content": content, "channel": channel}


def frame_for(channel: str, data: Any, identity: Identity) -> dict[str, Any] | None:
    """A ``/ws`` publish of ``data`` on a tutorial channel, in that endpoint's frame; None elsewhere.

    The sender is named as the endpoints name theirs: chat always (``Anonymous`` without a token),
    rooms only with a token.
    """
    if channel == CHAT:
        return chat_message(identity.name if identity.user_id else "Anonymous", data)
    if channel.startswith(ROOM):
        return room_message(channel[len(ROOM) :], data, identity.name if identity.user_id else None)
    if channel.startswith(GLOBAL):
        return global_message(channel[len(GLOBAL) :], data)
    return None
