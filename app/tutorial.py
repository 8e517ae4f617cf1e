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


def membership_notice(channel: str, name: str | None, count: int, joined: bool) -> tuple[dict[str, Any], bool] | None:
    """What the endpoint publishes when someone joins or leaves: (frame, exclude that someone).

    The chat joiner gets its own join notice; room members are told of others only. None on a
    channel whose endpoint announces nothing (``global``, and every non-tutorial channel).
    """
    if channel == CHAT:
        verb = "joined" if joined else "left"
        return chat_system(f"{name or 'Anonymous'} {verb} the chat", count), not joined
    if channel.startswith(ROOM):
        return room_membership("user_joined" if joined else "user_left", channel[len(ROOM) :], count, name), True
    return None


def display_name(channel: str, identity: Identity) -> str | None:
    """How a /ws client is named in a tutorial channel's frames: as the endpoints name theirs.

    Chat always names its members (``Anonymous`` without a token); rooms only with a token.
    """
    if identity.user_id:
        return identity.name
    return "Anonymous" if channel == CHAT else None


def frame_for(channel: str, data: Any, identity: Identity) -> dict[str, Any] | None:
    """A ``/ws`` publish of ``data`` on a tutorial channel, in that endpoint's frame; None elsewhere."""
    if channel == CHAT:
        return chat_message(display_name(channel, identity) or "Anonymous", data)
    if channel.startswith(ROOM):
        return room_message(channel[len(ROOM) :], data, display_name(channel, identity))
    if channel.startswith(GLOBAL):
        return global_message(channel[len(GLOBAL) :], data)
    return None
