"""The commands of Centrifugo's client protocol after ``connect``: field checks, one Session call.

Each takes the command's params (``{"channel":...}`` under its method's name) and returns the
result object (a dict), a pre-encoded reply (bytes), or None when it has replied itself
(``subscribe`` replies from inside ``Hub.join``, with a recovery's publications). Errors are
``CommandError`` (Centrifugo's codes) or Switchboard's ``ProtocolError`` (mapped by the caller).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from app import metrics
from app.auth import Identity
from app.broker import Position
from app.channel_state import Joined, Subscription
from app.errors import CentrifugeError, ErrorCode, ProtocolError
from app.presence import PAGE_LIMIT, parse_member
from app.protocols.centrifuge_wire import client_info, publication
from app.rpc import rpc as rpc_call
from app.session import Session, idempotency_key_of

Reply = dict[str, Any] | bytes | None
Command = Callable[[Session, int, dict[str, Any]], Awaitable[Reply]]
MAX_HISTORY_LIMIT = 1000
MAX_EPOCH_CHARS = 64
# The subscribe ``flag`` bit by which an SDK (its getState flows) asks to be refused, with 112,
# rather than subscribed from the top when its position cannot be recovered.
REJECT_UNRECOVERED = 2


class CommandError(Exception):
    def __init__(self, code: CentrifugeError, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def expiry(identity: Identity) -> dict[str, Any]:
    """``expires``/``ttl`` of a connect or refresh result: the SDK refreshes ``ttl`` s from now."""
    if identity.expires is None:
        return {}
    return {"expires": True, "ttl": max(1, int(identity.expires - time.time()))}


def _channel(params: dict[str, Any]) -> str:
    channel = params.get("channel")
    if not isinstance(channel, str) or not channel:
        raise CommandError(CentrifugeError.BAD_REQUEST, "channel must be a non-empty string")
    return channel


def _integer(params: dict[str, Any], key: str, default: int, low: int = 0) -> int:
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < 2**62:
        raise CommandError(CentrifugeError.BAD_REQUEST, f"{key} must be an integer >= {low}")
    return value


def _position(params: dict[str, Any]) -> Position:
    epoch = params.get("epoch", "")
    if not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_CHARS:
        raise CommandError(CentrifugeError.BAD_REQUEST, f"epoch must be a string of at most {MAX_EPOCH_CHARS}")
    # An epoch Switchboard never made (an SDK's own "_" sentinel) is simply not recoverable.
    return Position(_integer(params, "offset", 0), epoch)


async def subscribe(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """Recover from ``epoch``/``offset`` if asked; the recovered publications are in the reply.

    ``positioned``/``recoverable`` follow the namespace: a channel with history is both.
    ``delta: "fossil"`` is negotiated (the reply says ``delta: true``) where the namespace allows
    it (app/delta.py); ``data``, ``tf`` and map types are ignored.
    """
    channel = _channel(params)
    token = params.get("token") or None
    if token is not None and not isinstance(token, str):
        raise CommandError(CentrifugeError.BAD_REQUEST, "token must be a string")
    resume = _position(params) if params.get("recover") is True else None
    flag = params.get("flag", 0)
    reject = isinstance(flag, int) and bool(flag & REJECT_UNRECOVERED) and resume is not None
    opts = session.permissions.options(channel)
    asked = params.get("delta", "")
    if not isinstance(asked, str):
        raise CommandError(CentrifugeError.BAD_REQUEST, "delta must be a string")
    delta = asked == "fossil" and opts.delta
    if resume is not None and not resume.epoch and resume.offset and opts.history.enabled:
        # An SDK that subscribed before the channel's first publication has no epoch (here a
        # channel gets one with it), and an empty epoch means "any" to Centrifugo: the current.
        top = await session.services.hub.broker.history(channel, 1 << 62)
        resume = Position(resume.offset, top.position.epoch)
    rejected = False

    def announce(sub: Subscription, joined: Joined) -> None:
        nonlocal rejected
        position, result = joined.position, {}
        if opts.history.enabled:
            result = {"recoverable": True, "positioned": True, "epoch": position.epoch, "offset": position.offset}
        if delta:
            result["delta"] = True
        if resume is not None:
            result.update(was_recovering=True, recovered=joined.ok is True)
            if reject and joined.ok is not True:
                rejected = True
                error = {"code": int(CentrifugeError.UNRECOVERABLE_POSITION), "message": "unrecoverable position"}
                session.conn.send_text(orjson.dumps({"id": cmd_id, "error": error}))
                if sub.pending:
                    sub.pending.clear()  # refused: the live messages held back are not for it
                return
        pubs = sub.collected or []
        body = orjson.dumps(result)
        if pubs:  # encoded once each, when they were replayed: spliced in, not re-encoded
            body = body[:-1] + (b"," if result else b"") + b'"publications":[' + b",".join(pubs) + b"]}"
        session.conn.send_text(b'{"id":%d,"subscribe":%s}' % (cmd_id, body))

    await session.subscribe(channel, resume, token=token, announce=announce, delta=delta)
    if rejected:
        await session.unsubscribe(channel)
        return None
    await session.announce_join(channel, opts)
    return None


async def unsubscribe(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    channel = _channel(params)
    if channel in session.subscriptions:  # Centrifugo answers ok for a channel it is not in
        await session.unsubscribe(channel)
    return {}


async def publish(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    if "data" not in params:
        raise CommandError(CentrifugeError.BAD_REQUEST, "data is required")
    key = idempotency_key_of(params.get("idempotency_key"), session.publisher)
    await session.publish(_channel(params), params["data"], idempotency_key=key)
    return {}


def _present(session: Session, params: dict[str, Any]) -> str:
    """The channel, if its presence may be read: a namespace with presence, by a subscriber."""
    channel = _channel(params)
    if not session.permissions.options(channel).presence:
        raise CommandError(CentrifugeError.NOT_AVAILABLE, "this namespace keeps no presence")
    if channel not in session.subscriptions:
        raise CommandError(CentrifugeError.PERMISSION_DENIED, "presence is for subscribers")
    return channel


async def presence(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """The first ``PAGE_LIMIT`` members (Centrifugo's protocol has no pages)."""
    members, _ = await session.services.presence.page(_present(session, params), (0, 0), PAGE_LIMIT)
    found = {}
    for member in members:
        info = client_info(parse_member(member))
        if info is not None:
            found[info["client"]] = info
    return {"presence": found}


async def presence_stats(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    stats = await session.services.presence.stats(_present(session, params))
    return {"num_clients": stats["clients"], "num_users": stats["users"]}


async def history(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """``limit`` as Centrifugo takes it: -1 all (at most ``MAX_HISTORY_LIMIT``), 0 the position
    only; ``since`` ``{offset, epoch}``; ``reverse`` newest first."""
    channel = _channel(params)
    limit = _integer(params, "limit", 0, low=-1)
    limit = MAX_HISTORY_LIMIT if limit == -1 else min(limit, MAX_HISTORY_LIMIT)
    since_params = params.get("since")
    if since_params is not None and not isinstance(since_params, dict):
        raise CommandError(CentrifugeError.BAD_REQUEST, "since must be an object {offset, epoch}")
    since = _position(since_params) if since_params else None
    reverse = params.get("reverse") is True
    opts = session.permissions.options(channel)
    if channel not in session.subscriptions:
        await session.permissions.check_subscribe(session, channel, opts, None)
    if not opts.history.enabled:
        raise CommandError(CentrifugeError.NOT_AVAILABLE, "this namespace keeps no history")
    wait = session.conn.history_budget().delay(time.monotonic())
    if wait > 0:
        metrics.HISTORY_REFUSED.inc()
        raise ProtocolError(ErrorCode.OVER_BUDGET, f"history byte budget spent: retry in {wait:.1f} s")
    hub = session.services.hub
    if limit == 0 or (reverse and since is None):
        pubs, position = await hub.history_page(channel, None, max(1, limit))
        pubs = pubs if limit else []
    elif reverse:
        assert since is not None
        start = max(0, since.offset - 1 - limit)
        pubs, position = await hub.history_page(channel, start, limit)
    else:
        pubs, position = await hub.history_page(channel, since.offset if since else 0, limit)
    if since is not None and since.epoch and since.epoch != position.epoch:
        raise CommandError(CentrifugeError.UNRECOVERABLE_POSITION, "unrecoverable position")
    session.conn.spend_history(sum(map(len, pubs)))
    found = [publication(orjson.loads(pub)) for pub in pubs]
    if reverse:
        if since is not None:
            found = [pub for pub in found if pub.get("offset", 0) < since.offset]
        found.reverse()
    return {"publications": found, "epoch": position.epoch, "offset": position.offset}


async def rpc(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """``{method, data}`` -> ``{data}``: to the rpc proxy or hook, as on ``/ws`` (app/rpc.py); a
    method nothing takes is 104, Centrifugo's "method not found"."""
    return await rpc_call(session, cmd_id, params)


async def not_found(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """``sub_refresh``: subscriptions never expire here."""
    raise CommandError(CentrifugeError.METHOD_NOT_FOUND, "method not found")


COMMANDS: dict[str, Command] = {
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "publish": publish,
    "presence": presence,
    "presence_stats": presence_stats,
    "history": history,
    "rpc": rpc,
    "sub_refresh": not_found,
    "send": not_found,
    "refresh": not_found,  # run by the client (it moves the connection's expiry)
}
