"""The commands of Centrifugo's client protocol after ``connect``: field checks, one Session call.

Each takes the command's params (``{"channel":...}`` under its method's name) and returns the
result object (a dict), a pre-encoded reply (bytes), or None when it has replied itself
(``subscribe`` replies from inside ``Hub.join``, with a recovery's publications). Errors are
``CommandError`` (Centrifugo's codes) or Switchboard's ``ProtocolError`` (mapped by the caller).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from app import metrics
from app.auth import AuthError, Identity
from app.broker import Position
from app.channel_state import Joined, Subscription
from app.errors import CentrifugeError, ErrorCode, ProtocolError
from app.namespaces import ChannelOptions
from app.presence import PAGE_LIMIT, parse_member
from app.protocol import QUIET
from app.protocols.centrifuge_formats import format_for, send
from app.protocols.centrifuge_wire import client_info, publication
from app.rpc import rpc as rpc_call
from app.session import Session, idempotency_key_of
from app.sub_expiry import ttl

log = logging.getLogger("switchboard.centrifuge")

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


async def token_identity(session: Session, token: object) -> Identity:
    """A connect's or refresh's token as an identity; an empty or absent one is anonymous, if allowed."""
    if token in (None, "") and session.services.settings.allow_anonymous:
        return session.identity
    if not isinstance(token, str) or not token:
        metrics.AUTH_FAILURES.labels("missing").inc()
        raise CommandError(CentrifugeError.UNAUTHORIZED, "token required")
    try:
        return await session.services.auth.verify(token)
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.reason).inc()
        if exc.reason == "expired":
            raise CommandError(CentrifugeError.TOKEN_EXPIRED, "token expired") from None
        raise CommandError(CentrifugeError.UNAUTHORIZED, f"bad token: {exc.detail}") from None


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


def position_of(params: dict[str, Any]) -> Position:
    epoch = params.get("epoch", "")
    if not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_CHARS:
        raise CommandError(CentrifugeError.BAD_REQUEST, f"epoch must be a string of at most {MAX_EPOCH_CHARS}")
    # An epoch Switchboard never made (an SDK's own "_" sentinel) is simply not recoverable.
    return Position(_integer(params, "offset", 0), epoch)


def stream_flags(opts: ChannelOptions, params: dict[str, Any]) -> tuple[bool, bool]:
    """(recoverable, positioned) of one subscription: where the namespace keeps history, what the
    client asked for, or what the namespace forces (``force_recovery``, ``force_positioning``)."""
    if not opts.history.enabled:
        return False, False
    recoverable = opts.force_recovery or params.get("recoverable") is True
    positioned = recoverable or opts.force_positioning or params.get("positioned") is True
    return recoverable, positioned


def stream_result(recoverable: bool, positioned: bool, position: Position) -> dict[str, Any]:
    if not positioned:
        return {}
    result: dict[str, Any] = {"positioned": True, "epoch": position.epoch, "offset": position.offset}
    if recoverable:
        result["recoverable"] = True
    return result


def quiet_unless(sub: Subscription, opts: ChannelOptions, asked: bool) -> None:
    """Join/leave pushes only where the namespace announces them and the client asked (its
    ``join_leave`` flag), or the namespace forces them on every subscriber."""
    if not (opts.force_join_leave or (asked and opts.join_leave)):
        sub.encoding = QUIET.get(sub.encoding, sub.encoding)


async def resume_position(session: Session, channel: str, opts: ChannelOptions, resume: Position) -> Position:
    """An SDK that subscribed before the channel's first publication has no epoch (here a channel
    gets one with it), and an empty epoch means "any" to Centrifugo: the current one."""
    if not resume.epoch and resume.offset and opts.history.enabled:
        top = await session.services.hub.broker.history(channel, 1 << 62)
        return Position(resume.offset, top.position.epoch)
    return resume


async def subscribe(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """Recover from ``epoch``/``offset`` if asked; the recovered publications are in the reply.

    ``positioned``/``recoverable`` as ``stream_flags`` says; ``join_leave`` as ``quiet_unless``.
    ``delta: "fossil"`` is negotiated (the reply says ``delta: true``) where the namespace allows
    it (app/delta.py), in JSON only; ``data``, ``tf`` and map types are ignored. A subscription
    token's ``exp`` gives the reply ``expires``/``ttl`` (sub_refresh).
    """
    channel = _channel(params)
    token = params.get("token") or None
    if token is not None and not isinstance(token, str):
        raise CommandError(CentrifugeError.BAD_REQUEST, "token must be a string")
    opts = session.permissions.options(channel)
    recoverable, positioned = stream_flags(opts, params)
    resume = position_of(params) if params.get("recover") is True and recoverable else None
    flag = params.get("flag", 0)
    reject = isinstance(flag, int) and bool(flag & REJECT_UNRECOVERED) and resume is not None
    asked = params.get("delta", "")
    if not isinstance(asked, str):
        raise CommandError(CentrifugeError.BAD_REQUEST, "delta must be a string")
    fmt = format_for(session.wire)
    delta = asked == "fossil" and opts.delta and not fmt.binary  # Protobuf: never negotiated
    if resume is not None:
        resume = await resume_position(session, channel, opts, resume)
    rejected = False

    def announce(sub: Subscription, joined: Joined) -> None:
        nonlocal rejected
        result = stream_result(recoverable, positioned, joined.position)
        result.update(ttl(session.subscription_expires(channel)))
        if delta:
            result["delta"] = True
        quiet_unless(sub, opts, params.get("join_leave") is True)
        if resume is not None:
            result.update(was_recovering=True, recovered=joined.ok is True)
            if reject and joined.ok is not True:
                rejected = True
                error = {"code": int(CentrifugeError.UNRECOVERABLE_POSITION), "message": "unrecoverable position"}
                send(session.conn, session.wire, fmt.error(cmd_id, error))
                if sub.pending:
                    sub.pending.clear()  # refused: the live messages held back are not for it
                return
        # The replayed publications were encoded once each, as they were replayed.
        send(session.conn, session.wire, fmt.subscribe_reply(cmd_id, result, sub.collected or []))

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


async def _present(session: Session, params: dict[str, Any]) -> str:
    """The channel, if its presence may be read: a namespace with presence, by whom its
    ``allow_presence_for_subscriber`` allows (its subscribers, by default)."""
    channel = _channel(params)
    opts = session.permissions.options(channel)
    if not opts.presence:
        raise CommandError(CentrifugeError.NOT_AVAILABLE, "this namespace keeps no presence")
    await session.permissions.check_read(session, channel, opts, opts.presence_read, "presence")
    return channel


async def presence(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """The first ``PAGE_LIMIT`` members (Centrifugo's protocol has no pages)."""
    members, _ = await session.services.presence.page(await _present(session, params), (0, 0), PAGE_LIMIT)
    found = {}
    for member in members:
        info = client_info(parse_member(member))
        if info is not None:
            found[info["client"]] = info
    return {"presence": found}


async def presence_stats(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    stats = await session.services.presence.stats(await _present(session, params), anonymous=True)
    # Distinct users, each anonymous connection a user of its own (it has no id to share).
    return {"num_clients": stats["clients"], "num_users": stats["users"] + stats["anonymous"]}


async def history(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """``limit`` as Centrifugo takes it: -1 all (at most ``MAX_HISTORY_LIMIT``), 0 the position
    only; ``since`` ``{offset, epoch}``; ``reverse`` newest first."""
    channel = _channel(params)
    limit = _integer(params, "limit", 0, low=-1)
    limit = MAX_HISTORY_LIMIT if limit == -1 else min(limit, MAX_HISTORY_LIMIT)
    since_params = params.get("since")
    if since_params is not None and not isinstance(since_params, dict):
        raise CommandError(CentrifugeError.BAD_REQUEST, "since must be an object {offset, epoch}")
    since = position_of(since_params) if since_params else None
    reverse = params.get("reverse") is True
    opts = session.permissions.options(channel)
    await session.permissions.check_read(session, channel, opts, opts.history_read, "history")
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


# ``send`` (an async message: no id, no reply) goes where an ``rpc`` of this method goes.
SEND_METHOD = "$send"


async def async_message(session: Session, params: dict[str, Any]) -> None:
    """``{data}`` to the rpc proxy or hook as method ``$send`` (app/rpc.py), its answer dropped:
    the client waits for nothing, so a refusal or failure is logged, never sent."""
    try:
        await rpc_call(session, 0, {"method": SEND_METHOD, "data": params.get("data")})
    except ProtocolError as exc:
        log.debug("send from %s not taken: %s", session.client, int(exc.code))


async def sub_refresh(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """``{channel, token}`` -> ``{expires, ttl}``: a new subscription token moves the expiry."""
    channel = _channel(params)
    token = params.get("token")
    if not isinstance(token, str) or not token:
        raise CommandError(CentrifugeError.BAD_REQUEST, "token must be a non-empty string")
    return ttl(await session.sub_refresh(channel, token))


async def not_found(session: Session, cmd_id: int, params: dict[str, Any]) -> Reply:
    """``send`` (run by the client: it has no id and no reply) and ``refresh`` (likewise)."""
    raise CommandError(CentrifugeError.METHOD_NOT_FOUND, "method not found")


COMMANDS: dict[str, Command] = {
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "publish": publish,
    "presence": presence,
    "presence_stats": presence_stats,
    "history": history,
    "rpc": rpc,
    "sub_refresh": sub_refresh,
    "send": not_found,
    "refresh": not_found,  # run by the client (it moves the connection's expiry)
}
