"""The server API's methods (``POST /api/v1/<method>``): request models, then one function each.

The HTTP layer (``app/routes/server_api.py``) checks the key, reads and parses the body, and turns
``ApiError`` into the contract's error body. Models forbid unknown fields, so a typo is a 400, not
a silent no-op. Publications from here carry no ``info``: the server is not a client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from app import api_cluster
from app import api_schemas as schemas
from app.auth import Identity
from app.broker import BrokerUnavailable, Position
from app.errors import OUTCOME_UNKNOWN, ErrorCode, ProtocolError
from app.namespaces import ChannelOptions
from app.permissions import check_channel
from app.presence import PAGE_LIMIT, format_cursor, parse_cursor, parse_member
from app.services import Services
from app.session import SERVER_PUBLISHER, encode_publication, idempotency_key_of
from app.tutorial import frame_for

# How tutorial chat frames name the server when it publishes there.
SERVER = Identity(user_id="server", name="Server")
CHANNELS_LIMIT = 10_000


class ApiError(Exception):
    """An HTTP status and the protocol's error code: ``{"error":{"code":C,"message":M,...}}``."""

    def __init__(self, status: int, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def outcome_unknown(message: str = OUTCOME_UNKNOWN) -> ApiError:
    """A publish Redis never confirmed: it may have happened. A retry with the same key is safe."""
    return ApiError(503, ErrorCode.NOT_AVAILABLE, message, outcome="unknown")


# Protocol errors from shared code, as HTTP statuses.
STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_CHANNEL: 422,
    ErrorCode.LIMIT_EXCEEDED: 413,
    ErrorCode.NOT_AVAILABLE: 400,
    ErrorCode.TOO_MANY_REQUESTS: 429,
}


# For the schema only (the name rule is checked by channel_options, which answers 422 as the
# contract says, not pydantic's 400).
CHANNEL: JsonDict = {"pattern": r"^([A-Za-z0-9_.\-]{1,64}:[\w.:@~#,\-]{1,128}|[\w.@~#,\-]{1,128})$"}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishBody(Body):
    channel: str = Field(examples=["news:eu"], json_schema_extra=CHANNEL)
    data: Any = Field(examples=[{"headline": "Switchboard 1.0 is out"}])
    idempotency_key: str | None = Field(
        default=None,
        description="A retry with the same key publishes nothing",
        examples=["order-1729"],
        json_schema_extra={"pattern": r"^[\x21-\x7e]{1,128}$"},
    )


class BroadcastBody(Body):
    channels: list[str] = Field(min_length=1, max_length=1000, examples=[["news:eu", "news:us"]])
    data: Any = Field(examples=[{"headline": "Switchboard 1.0 is out"}])


class UserBody(Body):
    user: str = Field(min_length=1, max_length=256, examples=["alice"])


class SendBody(UserBody):
    data: Any = Field(examples=[{"text": "Your export is ready"}])


class DisconnectBody(UserBody):
    code: int = Field(default=4003, ge=4000, le=4999)
    reason: str = Field(default="", max_length=120, examples=["account suspended"])


class UserChannelBody(UserBody):
    channel: str = Field(examples=["team:42"], json_schema_extra=CHANNEL)


class ChannelBody(Body):
    channel: str = Field(examples=["room:lobby"], json_schema_extra=CHANNEL)


class PresenceBody(ChannelBody):
    cursor: str | None = Field(default=None, description="From the previous page's reply")
    limit: int = Field(default=PAGE_LIMIT, ge=1, le=PAGE_LIMIT)


class HistoryBody(ChannelBody):
    since: int | None = Field(default=None, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)


class ChannelsBody(Body):
    prefix: str = Field(default="", max_length=128, examples=["room:"])


class InfoBody(Body):
    pass


def channel_options(s: Services, channel: str) -> ChannelOptions:
    try:
        check_channel(channel)
    except ProtocolError as exc:
        raise ApiError(422, exc.code, exc.message) from None
    found = s.permissions.namespaces.known(channel)
    if found is None:
        raise ApiError(422, ErrorCode.UNKNOWN_CHANNEL, s.permissions.namespaces.unknown(channel))
    return found


async def publish_data(s: Services, channel: str, data: Any, key: str | None) -> Position | None:
    """Publish as the server: the API's publish and broadcast, and the outbox relay (app/outbox/).
    Raises ApiError or ProtocolError for what can never be published, BrokerUnavailable."""
    opts = channel_options(s, channel)
    frame = frame_for(channel, data, SERVER) or {"op": "pub", "channel": channel, "data": data}
    encoded = encode_publication(frame, s.settings.max_message_bytes)
    return await s.hub.publish(channel, encoded, history=opts.history, idempotency_key=key)


def _position(position: Position | None) -> dict[str, Any]:
    return {"offset": position.offset, "epoch": position.epoch} if position else {"offset": 0, "epoch": ""}


async def publish(s: Services, body: PublishBody) -> dict[str, Any]:
    key = idempotency_key_of(body.idempotency_key, SERVER_PUBLISHER)
    try:
        return _position(await publish_data(s, body.channel, body.data, key))
    except BrokerUnavailable:
        raise outcome_unknown() from None


async def broadcast(s: Services, body: BroadcastBody) -> dict[str, Any]:
    async def one(channel: str) -> dict[str, Any]:
        try:
            return {"channel": channel, **_position(await publish_data(s, channel, body.data, None))}
        except (ApiError, ProtocolError) as exc:
            return {"channel": channel, "error": {"code": int(exc.code), "message": exc.message}}
        except BrokerUnavailable:
            error = {"code": int(ErrorCode.NOT_AVAILABLE), "message": OUTCOME_UNKNOWN, "outcome": "unknown"}
            return {"channel": channel, "error": error}

    return {"results": list(await asyncio.gather(*(one(c) for c in body.channels)))}


async def send(s: Services, body: SendBody) -> dict[str, Any]:
    await s.users.command("send", body.user, data=body.data)
    return {}


async def disconnect(s: Services, body: DisconnectBody) -> dict[str, Any]:
    await s.users.command("disconnect", body.user, code=body.code, reason=body.reason)
    return {}


async def subscribe(s: Services, body: UserChannelBody) -> dict[str, Any]:
    channel_options(s, body.channel)
    await s.users.command("subscribe", body.user, channel=body.channel)
    return {}


async def unsubscribe(s: Services, body: UserChannelBody) -> dict[str, Any]:
    channel_options(s, body.channel)
    await s.users.command("unsubscribe", body.user, channel=body.channel)
    return {}


def _with_presence(s: Services, channel: str) -> None:
    if not channel_options(s, channel).presence:
        raise ApiError(400, ErrorCode.NOT_AVAILABLE, "this namespace keeps no presence")


async def presence(s: Services, body: PresenceBody) -> dict[str, Any]:
    _with_presence(s, body.channel)
    try:
        cursor = parse_cursor(body.cursor)
    except ValueError as exc:
        raise ApiError(400, ErrorCode.BAD_REQUEST, str(exc)) from None
    members, following = await s.presence.page(body.channel, cursor, body.limit)
    return {"clients": [parse_member(m) for m in members], "cursor": format_cursor(following)}


async def presence_stats(s: Services, body: ChannelBody) -> dict[str, Any]:
    _with_presence(s, body.channel)
    return await s.presence.stats(body.channel)


async def history(s: Services, body: HistoryBody) -> tuple[list[bytes], Position]:
    if not channel_options(s, body.channel).history.enabled:
        raise ApiError(400, ErrorCode.NOT_AVAILABLE, "this namespace keeps no history")
    return await s.hub.history_page(body.channel, body.since, body.limit)


async def channels(s: Services, body: ChannelsBody) -> dict[str, Any]:
    found = await s.presence.channels(body.prefix, CHANNELS_LIMIT)
    return {"channels": [{"channel": name, "clients": count} for name, count in found]}


async def info(s: Services, body: InfoBody) -> dict[str, Any]:
    return {"instances": await s.instances.list()}


Method = Callable[[Services, Any], Awaitable[Any]]
# name: (request body, method, summary, reply body)
METHODS: dict[str, tuple[type[BaseModel], Method, str, type[schemas.Reply]]] = {
    "publish": (
        PublishBody,
        publish,
        "Publish `data` to a channel; returns its offset once stored.",
        schemas.PositionReply,
    ),
    "broadcast": (
        BroadcastBody,
        broadcast,
        "Publish the same `data` to many channels; a result per channel.",
        schemas.BroadcastReply,
    ),
    "send": (
        SendBody,
        send,
        'Push `{"op":"message","data":...}` to every /ws connection of a user.',
        schemas.Empty,
    ),
    "disconnect": (
        DisconnectBody,
        disconnect,
        "Close every connection of a user, on every instance (4003).",
        schemas.Empty,
    ),
    "subscribe": (
        UserChannelBody,
        subscribe,
        "Subscribe every /ws connection of a user to a channel.",
        schemas.Empty,
    ),
    "unsubscribe": (
        UserChannelBody,
        unsubscribe,
        "Unsubscribe every /ws connection of a user from a channel.",
        schemas.Empty,
    ),
    "presence": (
        PresenceBody,
        presence,
        "Who is in a channel, cluster-wide, a page at a time.",
        schemas.PresenceReply,
    ),
    "presence_stats": (
        ChannelBody,
        presence_stats,
        "How many connections and distinct users are in a channel.",
        schemas.PresenceStatsReply,
    ),
    "history": (
        HistoryBody,
        history,
        "A channel's publications, oldest first, and its position.",
        schemas.HistoryReply,
    ),
    "channels": (
        ChannelsBody,
        channels,
        "Channels with members anywhere in the cluster.",
        schemas.ChannelsReply,
    ),
    "info": (InfoBody, info, "Live instances: connections, channels, uptime, Redis, draining.", schemas.InfoReply),
    "top_channels": (
        api_cluster.TopChannelsBody,
        api_cluster.top_channels,
        "The busiest channels across the cluster: subscribers and publications per second.",
        schemas.TopChannelsReply,
    ),
    "user_connections": (
        api_cluster.UserConnectionsBody,
        api_cluster.user_connections,
        "A user's /ws and tutorial connections on every instance, with their channels.",
        schemas.UserConnectionsReply,
    ),
}
