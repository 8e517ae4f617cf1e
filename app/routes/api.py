"""HTTP side: the demo page, server-side publishing, and dev-mode token minting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from app import __version__, metrics
from app.auth import AuthError, mint_token, verify_token
from app.broker import BrokerUnavailable
from app.errors import AUTH_FAILED, INVALID_CHANNEL, PUBLISH_FAILED
from app.permissions import TUTORIAL_CHANNEL_PART
from app.protocol import encode
from app.services import services

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/api/instance")
async def instance(request: Request) -> dict[str, str]:
    """Which instance answered: the demo shows it so a cross-instance conversation is visible."""
    return {"instance": services(request).settings.instance_id, "version": __version__}


@router.api_route("/ws", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/ws/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
async def upgrade_required(path: str = "") -> JSONResponse:
    """A plain HTTP request on a WebSocket path (a proxy dropped the Upgrade header, say)."""
    return JSONResponse({"error": "WebSocket upgrade required"}, status_code=426, headers={"Upgrade": "websocket"})


class PublishBody(BaseModel):
    content: Any = Field(description="Delivered to subscribers as the frame's `content`")


def require_bearer(request: Request, authorization: str | None) -> None:
    token = authorization.removeprefix("Bearer ").strip() if authorization else None
    try:
        verify_token(token, services(request).settings)
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.reason).inc()
        raise HTTPException(401, detail={"error": AUTH_FAILED, "reason": exc.reason}) from None


@router.post("/api/global/{channel}", status_code=202)
async def publish_global(
    channel: str, body: PublishBody, request: Request, authorization: str | None = Header(default=None)
) -> dict[str, Any]:
    """Publish to ``/ws/global/{channel}`` subscribers from a backend, with a bearer JWT."""
    require_bearer(request, authorization)
    s = services(request)
    if not TUTORIAL_CHANNEL_PART.fullmatch(channel):
        raise HTTPException(422, detail={"error": INVALID_CHANNEL})
    frame = encode({"content": body.content, "channel": channel})
    if len(frame) > s.settings.max_message_bytes:
        # The same cap as a client's frame: subscribers never get more than that from one message.
        raise HTTPException(413, detail={"error": "Message too big", "limit": s.settings.max_message_bytes})
    try:
        position = await s.hub.publish(f"global:{channel}", frame)
    except BrokerUnavailable:
        raise HTTPException(503, detail={"error": PUBLISH_FAILED}) from None
    if position is None:
        return {"status": "published"}
    return {"status": "published", "offset": position.offset, "epoch": position.epoch}


@router.get("/api/presence/{channel:path}")
async def presence(channel: str, request: Request, authorization: str | None = Header(default=None)) -> dict[str, Any]:
    """Cluster-wide member count of a Hub channel: ``chat``, ``room:{id}`` or ``global:{ch}``."""
    require_bearer(request, authorization)
    try:
        members = await services(request).presence.count(channel)
    except BrokerUnavailable:
        raise HTTPException(503, detail={"error": "Broker unavailable"}) from None
    return {"channel": channel, "members": members}


class TokenRequest(BaseModel):
    sub: str = Field(default="demo", min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=64)
    ttl: int = Field(default=3600, ge=1, le=86400)


@router.post("/dev/token")
async def dev_token(request: Request, body: TokenRequest | None = None) -> dict[str, str]:
    """Dev mode only: mint a demo token. Absent (404) in production."""
    s = services(request)
    if not s.settings.dev_mode:
        raise HTTPException(404, detail={"error": "Not found"})
    req = body or TokenRequest()
    return {"token": mint_token(s.settings, req.sub, req.name, req.ttl), "token_type": "bearer"}
