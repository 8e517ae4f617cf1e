"""What the HTTP API answers, as pydantic models: for its OpenAPI schema, not for encoding.

Replies are encoded with orjson straight from the methods (a history reply is spliced from stored
frames), so these models only describe them. The schemathesis run in the tests checks every
response against them: a field added to a reply without its model here fails that test.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Reply):
    code: int
    message: str
    outcome: Literal["unknown"] | None = None  # a publish Redis never confirmed: it may have happened


class ErrorReply(Reply):
    """Every 4xx and 5xx the API itself answers: the protocol's error code and a message."""

    error: ErrorDetail


class Empty(Reply):
    """Done (or queued to every instance, for commands addressed to a user)."""


class PositionReply(Reply):
    offset: int
    epoch: str


class BroadcastResult(Reply):
    channel: str
    offset: int | None = None
    epoch: str | None = None
    error: ErrorDetail | None = None


class BroadcastReply(Reply):
    results: list[BroadcastResult]


class Member(Reply):
    client: str
    user: str
    info: Any = None


class PresenceReply(Reply):
    clients: list[Member]
    cursor: str | None


class PresenceStatsReply(Reply):
    clients: int
    users: int


class HistoryReply(Reply):
    publications: list[dict[str, Any]]
    offset: int
    epoch: str


class ChannelCount(Reply):
    channel: str
    clients: int


class ChannelsReply(Reply):
    channels: list[ChannelCount]


class Instance(Reply):
    id: str
    version: str
    connections: int
    # None from an instance of an older version (a rolling upgrade).
    channels: int | None = None
    uptime: float | None = None
    draining: bool | None = None
    redis: Literal["up", "down", "memory"] | None = None


class InfoReply(Reply):
    instances: list[Instance]


class ChannelActivity(Reply):
    channel: str
    subscribers: int
    rate: float


class TopChannelsReply(Reply):
    channels: list[ChannelActivity]
    answered: int
    missing: list[str]


class UserConnection(Reply):
    client: str
    instance: str
    endpoint: str
    channels: list[str]
    channel_count: int


class UserConnectionsReply(Reply):
    connections: list[UserConnection]
    answered: int
    missing: list[str]


class PublishedReply(Reply):
    status: Literal["published"]
    offset: int | None = None
    epoch: str | None = None


class MembersReply(Reply):
    channel: str
    members: int


class ReadyReply(Reply):
    status: Literal["ready", "unavailable"]
    broker: bool
    draining: bool


def errors(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each with an ``ErrorReply`` body."""
    return {status: {"model": ErrorReply, "description": text} for status, text in described.items()}
