"""The server API's questions to every instance (``app/cluster_query.py``): ``top_channels`` and
``user_connections``. Their replies name the live instances that did not answer in time."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.cluster_query import merge_channels
from app.services import Services


class ClusterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopChannelsBody(ClusterBody):
    sort: Literal["subscribers", "rate"] = Field(default="subscribers", description="Busiest by which count")
    limit: int = Field(default=20, ge=1, le=100)


class UserConnectionsBody(ClusterBody):
    user: str = Field(min_length=1, max_length=256, examples=["alice"])


async def top_channels(s: Services, body: TopChannelsBody) -> dict[str, Any]:
    answers, missing = await s.queries.ask("channels")
    return {"channels": merge_channels(answers, body.sort, body.limit), "answered": len(answers), "missing": missing}


async def user_connections(s: Services, body: UserConnectionsBody) -> dict[str, Any]:
    answers, missing = await s.queries.ask("user", user=body.user)
    found = sorted((row for rows in answers for row in rows), key=lambda r: (r["instance"], r["client"]))
    return {"connections": found, "answered": len(answers), "missing": missing}
