"""Centrifugo's server API methods (``POST /api/<method>``) over Switchboard's own (app/api_methods.py).

Backends written for Centrifugo (``cent``, cent.js, gocent) call these unchanged: the same request
fields, the same result shapes, Centrifugo's error codes. Each method checks its own fields and
then calls the native method, so a channel's name, namespace and limits are checked exactly as on
``/api/v1``, reserved names included. Centrifugo fields Switchboard has no counterpart for
(``tags``, ``b64data``, a connection's ``client`` or ``session``...) are refused with 107 naming
the field: silently ignoring them would tell a backend something happened that did not.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from app import api_methods as native
from app import centrifugo_schemas as schemas
from app.api_methods import ApiError
from app.broker import BrokerUnavailable
from app.errors import CENTRIFUGE_ERRORS, CentrifugeError, ErrorCode, ProtocolError
from app.presence import PAGE_LIMIT
from app.protocols.centrifuge_commands import MAX_HISTORY_LIMIT
from app.protocols.centrifuge_wire import client_info, publication
from app.services import Services
from app.session import SERVER_PUBLISHER, idempotency_key_of

# Centrifugo's presence has no pages: at most this many members, read a page at a time.
PRESENCE_LIMIT = 10 * PAGE_LIMIT


class CentrifugoError(Exception):
    """Answered as ``{"error":{"code":C,"message":M}}`` with HTTP 200, as Centrifugo does."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishParams(Params):
    channel: str = Field(examples=["news:eu"], json_schema_extra=native.CHANNEL)
    data: Any = Field(examples=[{"headline": "Switchboard 1.0 is out"}])
    idempotency_key: str | None = Field(default=None, json_schema_extra={"pattern": r"^[\x21-\x7e]{1,128}$"})
    skip_history: bool = Field(default=False, description="Only false: every publication is kept in history")


class BroadcastParams(Params):
    channels: list[str] = Field(min_length=1, max_length=1000, examples=[["news:eu", "news:us"]])
    data: Any = Field(examples=[{"headline": "Switchboard 1.0 is out"}])
    idempotency_key: str | None = Field(default=None, json_schema_extra={"pattern": r"^[\x21-\x7e]{1,128}$"})
    skip_history: bool = Field(default=False, description="Only false: every publication is kept in history")


class UserChannelParams(Params):
    user: str = Field(min_length=1, max_length=256, examples=["alice"])
    channel: str = Field(examples=["team:42"], json_schema_extra=native.CHANNEL)


class DisconnectObject(Params):
    code: int = Field(default=4003, ge=4000, le=4999)
    reason: str = Field(default="", max_length=120)


class DisconnectParams(Params):
    user: str = Field(min_length=1, max_length=256, examples=["alice"])
    disconnect: DisconnectObject | None = None


class ChannelParams(Params):
    channel: str = Field(examples=["room:lobby"], json_schema_extra=native.CHANNEL)


class StreamPosition(Params):
    offset: int = Field(default=0, ge=0)
    epoch: str = Field(default="", max_length=64)


class HistoryParams(ChannelParams):
    limit: int = Field(default=0, ge=-1, description="0: the position only; -1: all (at most 1000)")
    since: StreamPosition | None = None
    reverse: bool = False


class ChannelsParams(Params):
    pattern: str = Field(default="", max_length=128, description="A glob: `*`, `?`, `[...]`", examples=["room:*"])


class InfoParams(Params):
    pass


async def publish(s: Services, p: PublishParams) -> dict[str, Any]:
    _history_kept(p.skip_history)
    key = idempotency_key_of(p.idempotency_key, SERVER_PUBLISHER)
    try:
        position = await native.publish_data(s, p.channel, p.data, key)
    except BrokerUnavailable:
        raise native.outcome_unknown() from None
    return {"offset": position.offset, "epoch": position.epoch} if position else {}


async def broadcast(s: Services, p: BroadcastParams) -> dict[str, Any]:
    _history_kept(p.skip_history)

    async def one(channel: str) -> dict[str, Any]:
        try:
            return {
                "result": await publish(
                    s, PublishParams(channel=channel, data=p.data, idempotency_key=p.idempotency_key)
                )
            }
        except (ApiError, ProtocolError) as exc:
            return {"error": {"code": error_code(exc.code), "message": exc.message}}

    # gather keeps the order: a response per channel, as asked.
    return {"responses": list(await asyncio.gather(*(one(c) for c in p.channels)))}


async def subscribe(s: Services, p: UserChannelParams) -> dict[str, Any]:
    return await native.subscribe(s, native.UserChannelBody(user=p.user, channel=p.channel))


async def unsubscribe(s: Services, p: UserChannelParams) -> dict[str, Any]:
    return await native.unsubscribe(s, native.UserChannelBody(user=p.user, channel=p.channel))


async def disconnect(s: Services, p: DisconnectParams) -> dict[str, Any]:
    how = p.disconnect or DisconnectObject()
    return await native.disconnect(s, native.DisconnectBody(user=p.user, code=how.code, reason=how.reason))


async def presence(s: Services, p: ChannelParams) -> dict[str, Any]:
    found: dict[str, Any] = {}
    cursor = None
    while len(found) < PRESENCE_LIMIT:
        page = await native.presence(s, native.PresenceBody(channel=p.channel, cursor=cursor))
        for member in page["clients"]:
            info = client_info(member)
            if info is not None:
                found[info["client"]] = info
        cursor = page["cursor"]
        if cursor is None:
            break
    return {"presence": found}


async def presence_stats(s: Services, p: ChannelParams) -> dict[str, Any]:
    stats = await native.presence_stats(s, native.ChannelBody(channel=p.channel))
    return {"num_clients": stats["clients"], "num_users": stats["users"]}


async def history(s: Services, p: HistoryParams) -> dict[str, Any]:
    """As the client protocol's ``history`` (app/protocols/centrifuge_commands.py) reads it."""
    limit = MAX_HISTORY_LIMIT if p.limit == -1 else min(p.limit, MAX_HISTORY_LIMIT)
    since = p.since

    async def page(start: int | None, count: int) -> tuple[list[bytes], Any]:
        return await native.history(s, native.HistoryBody(channel=p.channel, since=start, limit=count))

    if limit == 0 or (p.reverse and since is None):
        pubs, position = await page(None, max(1, limit))
        pubs = pubs if limit else []
    elif p.reverse:
        assert since is not None
        pubs, position = await page(max(0, since.offset - 1 - limit), limit)
    else:
        pubs, position = await page(since.offset if since else 0, limit)
    if since is not None and since.epoch and since.epoch != position.epoch:
        raise CentrifugoError(CentrifugeError.UNRECOVERABLE_POSITION, "unrecoverable position")
    found = [publication(orjson.loads(pub)) for pub in pubs]
    if p.reverse:
        if since is not None:
            found = [pub for pub in found if pub.get("offset", 0) < since.offset]
        found.reverse()
    return {"publications": found, "offset": position.offset, "epoch": position.epoch}


async def history_remove(s: Services, p: ChannelParams) -> dict[str, Any]:
    if not native.channel_options(s, p.channel).history.enabled:
        raise ApiError(400, ErrorCode.NOT_AVAILABLE, "this namespace keeps no history")
    await s.hub.broker.remove_history(p.channel)
    return {}


async def channels(s: Services, p: ChannelsParams) -> dict[str, Any]:
    found = await native.channels(s, native.ChannelsBody())
    pattern = p.pattern or "*"
    return {
        "channels": {
            c["channel"]: {"num_clients": c["clients"]}
            for c in found["channels"]
            if fnmatch.fnmatchcase(c["channel"], pattern)
        }
    }


async def info(s: Services, p: InfoParams) -> dict[str, Any]:
    found = await native.info(s, native.InfoBody())
    nodes = [
        {
            "uid": node["id"],
            "name": node["id"],
            "version": node["version"],
            "num_clients": node["connections"],
            "num_channels": node.get("channels") or 0,
            "uptime": int(node.get("uptime") or 0),
        }
        for node in found["instances"]
    ]
    return {"nodes": nodes}


def _history_kept(skip: bool) -> None:
    if skip:
        raise CentrifugoError(CentrifugeError.BAD_REQUEST, "skip_history: not supported (history is per namespace)")


def error_code(code: ErrorCode) -> int:
    """A native code as Centrifugo's server API names it (most are the same number)."""
    return int(CENTRIFUGE_ERRORS.get(code, CentrifugeError.INTERNAL))


Method = Callable[[Services, Any], Awaitable[dict[str, Any]]]
# name: (params, method, summary, result)
METHODS: dict[str, tuple[type[BaseModel], Method, str, type[BaseModel]]] = {
    "publish": (PublishParams, publish, "Publish `data` to a channel.", schemas.PublishResult),
    "broadcast": (BroadcastParams, broadcast, "Publish `data` to many channels.", schemas.BroadcastResult),
    "subscribe": (UserChannelParams, subscribe, "Subscribe a user's connections.", schemas.EmptyResult),
    "unsubscribe": (UserChannelParams, unsubscribe, "Unsubscribe a user's connections.", schemas.EmptyResult),
    "disconnect": (DisconnectParams, disconnect, "Disconnect a user everywhere.", schemas.EmptyResult),
    "presence": (ChannelParams, presence, "Who is in a channel.", schemas.PresenceResult),
    "presence_stats": (ChannelParams, presence_stats, "How many are in a channel.", schemas.PresenceStatsResult),
    "history": (HistoryParams, history, "A channel's publications and position.", schemas.HistoryResult),
    "history_remove": (ChannelParams, history_remove, "Drop a channel's history.", schemas.EmptyResult),
    "channels": (ChannelsParams, channels, "Channels with members.", schemas.ChannelsResult),
    "info": (InfoParams, info, "The live instances.", schemas.InfoResult),
}
