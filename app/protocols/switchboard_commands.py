"""The ``/ws`` commands after ``connect``: field checks, then one Session call each.

Each returns the ok reply's fields (a dict), a pre-encoded reply (bytes), or None when it has
replied itself (``subscribe`` replies from inside ``Hub.join``, between the recovered
publications and the live ones). Field errors are ``ProtocolError(BAD_REQUEST)``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from app import metrics
from app.broker import Position
from app.channel_state import Joined, Subscription
from app.errors import ErrorCode, ProtocolError
from app.namespaces import ChannelOptions
from app.presence import PAGE_LIMIT, format_cursor, parse_cursor, parse_member
from app.rpc import rpc
from app.session import DETACHED, Session, idempotency_key_of, valid_position

Reply = dict[str, Any] | bytes | None
Command = Callable[[Session, int, dict[str, Any]], Awaitable[Reply]]
HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000


def reply_bytes(cmd_id: int, fields: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": cmd_id, "ok": True, **fields})


def _offset(frame: dict[str, Any], key: str) -> int | None:
    value = frame.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{key} must be an integer >= 0")
    return value


def _resume(frame: dict[str, Any]) -> Position | None:
    since, epoch = _offset(frame, "since"), frame.get("epoch")
    if since is None and epoch is None:
        return None
    if since is None or not isinstance(epoch, str) or not valid_position(since, epoch):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "resume needs both since (an offset) and epoch")
    return Position(since, epoch)


async def subscribe(
    session: Session, cmd_id: int, frame: dict[str, Any], *, registered: Callable[[], None] | None = None
) -> Reply:
    """``registered``: see ``Hub.join`` (the next command may start then, during a replay)."""
    channel, resume, token = frame.get("channel"), _resume(frame), frame.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "token must be a string")

    def announce(sub: Subscription, joined: Joined) -> None:
        position = joined.position
        fields: dict[str, Any] = {"channel": channel, "offset": position.offset, "epoch": position.epoch}
        if joined.history_off:
            fields.update(recovered=False, reason="history off")
        elif joined.ok is not None:
            fields.update(recovered=joined.ok, **({"count": joined.count} if joined.ok else {"reason": joined.reason}))
        session.conn.send_text(reply_bytes(cmd_id, fields))

    opts = await session.subscribe(channel, resume, token=token, announce=announce, registered=registered)
    assert isinstance(channel, str)
    await session.announce_join(channel, opts)
    return None


async def unsubscribe(session: Session, cmd_id: int, frame: dict[str, Any]) -> Reply:
    channel = frame.get("channel")
    if not isinstance(channel, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "channel must be a string")
    await session.unsubscribe(channel)
    return {}


async def publish(session: Session, cmd_id: int, frame: dict[str, Any]) -> Reply:
    if "data" not in frame:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "data is required")
    key = idempotency_key_of(frame.get("idempotency_key"), session.publisher)
    position = await session.publish(frame.get("channel"), frame["data"], idempotency_key=key)
    return {"offset": position.offset, "epoch": position.epoch} if position else {"offset": 0, "epoch": ""}


async def _readable(session: Session, channel: object) -> tuple[str, ChannelOptions]:
    """A channel whose history this client may read: by default one it is in, or one it may
    subscribe to now; the namespace's ``allow_history_for_subscriber`` narrows that."""
    opts = session.permissions.options(channel)
    assert isinstance(channel, str)
    await session.permissions.check_read(session, channel, opts, opts.history_read, "history")
    return channel, opts


async def history(session: Session, cmd_id: int, frame: dict[str, Any]) -> Reply:
    since, limit = _offset(frame, "since"), _offset(frame, "limit")
    limit = HISTORY_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"limit must be 1 to {MAX_HISTORY_LIMIT}")
    channel, opts = await _readable(session, frame.get("channel"))
    if not opts.history.enabled:
        raise ProtocolError(ErrorCode.NOT_AVAILABLE, "this namespace keeps no history")
    # The connection's history bytes (app/budgets.py): refused while spent, before Redis is asked.
    wait = session.conn.history_budget().delay(time.monotonic())
    if wait > 0:
        metrics.HISTORY_REFUSED.inc()
        raise ProtocolError(ErrorCode.OVER_BUDGET, f"history byte budget spent: retry in {wait:.1f} s")
    pubs, position = await session.services.hub.history_page(channel, since, limit)
    session.conn.spend_history(sum(map(len, pubs)))
    return history_reply(b'{"id":%d,"ok":true,' % cmd_id, pubs, position)


def history_reply(head: bytes, pubs: list[bytes], position: Position) -> bytes:
    """``...,"publications":[...],"offset":N,"epoch":E}``: stored frames are already encoded, so
    they are spliced in rather than decoded and encoded again."""
    tail = b'],"offset":%d,"epoch":%s}' % (position.offset, orjson.dumps(position.epoch))
    return head + b'"publications":[' + b",".join(pubs) + tail


async def _present(session: Session, frame: dict[str, Any]) -> str:
    """The channel, if its presence may be read: a namespace with presence, by whom the namespace
    says (subscribers by default); a detached command (``POST /command``, which holds no
    subscription) where subscribers may, by whoever may subscribe."""
    channel = frame.get("channel")
    opts = session.permissions.options(channel)
    assert isinstance(channel, str)
    if not opts.presence:
        raise ProtocolError(ErrorCode.NOT_AVAILABLE, "this namespace keeps no presence")
    mode = opts.presence_read
    if mode == "subscribers" and session.conn.endpoint == DETACHED:
        mode = "subscribable"  # it could subscribe over /ws and then read it
    await session.permissions.check_read(session, channel, opts, mode, "presence")
    return channel


async def presence(session: Session, cmd_id: int, frame: dict[str, Any]) -> Reply:
    """A page of at most ``limit`` (1000) members; ``cursor`` in the reply fetches the next."""
    limit = _offset(frame, "limit") or PAGE_LIMIT
    if not 1 <= limit <= PAGE_LIMIT:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"limit must be 1 to {PAGE_LIMIT}")
    try:
        cursor = parse_cursor(frame.get("cursor"))
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
    channel = await _present(session, frame)
    members, following = await session.services.presence.page(channel, cursor, limit)
    return {"clients": [parse_member(m) for m in members], "cursor": format_cursor(following)}


async def presence_stats(session: Session, cmd_id: int, frame: dict[str, Any]) -> Reply:
    return await session.services.presence.stats(await _present(session, frame))


COMMANDS: dict[str, Command] = {
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "publish": publish,
    "history": history,
    "presence": presence,
    "presence_stats": presence_stats,
    "rpc": rpc,
}
