"""Centrifugo's client protocol, JSON: how Switchboard's channel messages look on that wire.

Channel frames are stored and fanned out in the ``/ws`` shape (``{"op":"pub","channel",
"data","info","offset","epoch"}``, or a tutorial channel's own frame). A Centrifugo subscriber
gets them as ``{"push":{"channel":C,"pub":{"data","offset","info"}}}``: ``Hub.deliver`` builds
that once per message per process, parsing the frame once, and only when such a subscriber is
there. Join and leave pushes become Centrifugo's ``join``/``leave``; frames with no Centrifugo
counterpart are not sent (None).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.protocol import Envelope


def client_info(info: object) -> dict[str, Any] | None:
    """``{"user","client","info"}`` (a /ws push's, or a presence member) as Centrifugo's
    ClientInfo: ``{"user","client","conn_info"}``."""
    if not isinstance(info, dict):
        return None
    found: dict[str, Any] = {"user": info.get("user") or "", "client": info.get("client") or ""}
    if info.get("info") is not None:
        found["conn_info"] = info["info"]
    return found


def publication(frame: dict[str, Any], offset: int = 0) -> dict[str, Any]:
    """A /ws ``pub`` push (as stored, or as ``history`` returns it) as a Centrifugo Publication."""
    pub: dict[str, Any] = {"data": frame.get("data")}
    offset = offset or frame.get("offset") or 0
    if offset:
        pub["offset"] = offset
    info = client_info(frame.get("info"))
    if info is not None and (info["user"] or info["client"]):
        pub["info"] = info
    return pub


def _parse(env: Envelope) -> dict[str, Any] | None:
    try:
        frame = orjson.loads(env.frame)
    except orjson.JSONDecodeError:
        return None
    return frame if isinstance(frame, dict) else None


def channel_publication(env: Envelope, tutorial: bool) -> bytes | None:
    """One channel message as an encoded Publication (a recovery's, in the subscribe reply)."""
    frame = _parse(env)
    return None if frame is None else _publication(frame, env, tutorial)


def _publication(frame: dict[str, Any], env: Envelope, tutorial: bool) -> bytes | None:
    if tutorial:  # the tutorial's frame, unchanged, is the data (as /ws wraps it)
        return orjson.dumps({"data": frame, **({"offset": env.offset} if env.offset else {})})
    if frame.get("op") != "pub":
        return None  # a join or leave is not part of a channel's history
    return orjson.dumps(publication(frame, env.offset))


def channel_push(channel_json: bytes, env: Envelope, tutorial: bool, join_leave: bool = True) -> bytes | None:
    """The push for one channel message, or None if Centrifugo's protocol has none for it (or it
    is a join or leave, and ``join_leave`` is off)."""
    frame = _parse(env)
    if frame is None:
        return None
    op = frame.get("op")
    if not tutorial and op in ("join", "leave"):
        if not join_leave:
            return None
        body = orjson.dumps({"info": client_info(frame.get("info")) or {}})
        return b'{"push":{"channel":%s,"%s":%s}}' % (channel_json, op.encode(), body)
    pub = _publication(frame, env, tutorial)
    if pub is None:
        return None
    return b'{"push":{"channel":%s,"pub":%s}}' % (channel_json, pub)


def push(channel: str, kind: str, body: dict[str, Any]) -> bytes:
    """A push for one connection (``subscribe``, ``unsubscribe``, ``message``...)."""
    inner: dict[str, Any] = {kind: body}
    if channel:
        inner = {"channel": channel, **inner}
    return orjson.dumps({"push": inner})
