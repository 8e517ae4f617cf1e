"""What Centrifugo's server API shape answers (app/centrifugo_api.py), for the OpenAPI schema.

As app/api_schemas.py: descriptions only, checked against every answer by the schemathesis run.
Every answer is ``{"result":...}`` or ``{"error":{"code","message"}}``, both with HTTP 200.
"""

from __future__ import annotations

from typing import Any, cast

from pydantic import BaseModel, ConfigDict, create_model


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(Result):
    code: int
    message: str


class EmptyResult(Result):
    pass


class PublishResult(Result):
    offset: int | None = None  # absent for a namespace that keeps no history
    epoch: str | None = None


class PublishResponse(Result):
    result: PublishResult | None = None
    error: Error | None = None


class BroadcastResult(Result):
    responses: list[PublishResponse]


class ClientInfo(Result):
    client: str
    user: str
    conn_info: Any = None


class PresenceResult(Result):
    presence: dict[str, ClientInfo]


class PresenceStatsResult(Result):
    num_clients: int
    num_users: int


class Publication(Result):
    data: Any = None
    offset: int | None = None
    info: ClientInfo | None = None


class HistoryResult(Result):
    publications: list[Publication]
    offset: int
    epoch: str


class ChannelInfo(Result):
    num_clients: int


class ChannelsResult(Result):
    channels: dict[str, ChannelInfo]


class Node(Result):
    uid: str
    name: str
    version: str
    num_clients: int
    num_channels: int
    uptime: int


class InfoResult(Result):
    nodes: list[Node]


def reply(name: str, result: type[BaseModel]) -> type[BaseModel]:
    """``{"result": R}`` or ``{"error": E}``: the body of every 200."""
    return create_model(
        f"{name}Reply", __base__=Result, result=(cast(Any, result | None), None), error=(Error | None, None)
    )


class ErrorReply(Result):
    """A 4xx before the method runs: a missing or wrong key, a body that is not JSON."""

    error: Error


class CommandReply(Result):
    """``POST /api``: the named method's result (its own schema is on ``/api/<method>``) or an error."""

    result: dict[str, Any] | None = None
    error: Error | None = None
