"""HTTP side: the demo page, the tutorial's publish and presence calls (API key), dev tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from app import __version__
from app.api_methods import STATUS, ApiError, outcome_unknown
from app.api_schemas import MembersReply, PublishedReply
from app.auth import mint_token
from app.broker import BrokerUnavailable
from app.errors import INVALID_CHANNEL, MISSING_CONTENT, PUBLISH_FAILED, RESERVED_CHANNEL, ErrorCode, ProtocolError
from app.permissions import TUTORIAL_CHANNEL_PART
from app.reserved import reserved
from app.routes.server_api import API_ERRORS, BODY_ALLOWANCE, read_object, require_key
from app.services import Services, services
from app.session import encode_publication
from app.tutorial import global_message

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """Browsers ask every page's origin for this; without it each page load logs a 404."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/api/instance", responses={200: {"model": dict[str, str], "description": "this instance"}})
async def instance(request: Request) -> dict[str, str]:
    """Which instance answered: the demo shows it so a cross-instance conversation is visible."""
    return {"instance": services(request).settings.instance_id, "version": __version__}


@router.api_route("/ws", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/ws/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
async def upgrade_required(path: str = "") -> JSONResponse:
    """A plain HTTP request on a WebSocket path (a proxy dropped the Upgrade header, say)."""
    return JSONResponse({"error": "WebSocket upgrade required"}, status_code=426, headers={"Upgrade": "websocket"})


@router.post(
    "/api/global/{channel}",
    status_code=202,
    tags=["server API"],
    responses={202: {"model": PublishedReply, "description": "published"}, **API_ERRORS},
)
async def publish_global(channel: str, request: Request, s: Services = Security(require_key)) -> dict[str, Any]:
    """Publish `{"content":C}` to `/ws/global/{channel}` subscribers (API key, like `/api/v1/*`)."""
    if reserved(channel):
        raise ApiError(422, ErrorCode.UNKNOWN_CHANNEL, RESERVED_CHANNEL)
    if not TUTORIAL_CHANNEL_PART.fullmatch(channel):
        raise ApiError(422, ErrorCode.BAD_REQUEST, INVALID_CHANNEL)
    body = await read_object(request, s.settings.max_message_bytes + BODY_ALLOWANCE)
    if "content" not in body:
        raise ApiError(400, ErrorCode.BAD_REQUEST, MISSING_CONTENT)
    try:
        frame = encode_publication(global_message(channel, body["content"]), s.settings.max_message_bytes)
    except ProtocolError as exc:
        raise ApiError(STATUS.get(exc.code, 400), exc.code, exc.message) from None
    try:
        position = await s.hub.publish(f"global:{channel}", frame)
    except BrokerUnavailable:
        raise outcome_unknown(PUBLISH_FAILED) from None
    if position is None:
        return {"status": "published"}
    return {"status": "published", "offset": position.offset, "epoch": position.epoch}


@router.get(
    "/api/presence/{channel:path}",
    tags=["server API"],
    responses={
        200: {"model": MembersReply, "description": "the count"},
        404: {"description": "not a channel path (a control character, say)"},
        **API_ERRORS,
    },
)
async def presence(channel: str, s: Services = Security(require_key)) -> dict[str, Any]:
    """Cluster-wide member count of a channel: `chat`, `room:{id}`, `global:{ch}`, any /ws channel."""
    if reserved(channel):
        raise ApiError(422, ErrorCode.UNKNOWN_CHANNEL, RESERVED_CHANNEL)
    try:
        members = await s.presence.count(channel)
    except BrokerUnavailable:
        raise ApiError(503, ErrorCode.NOT_AVAILABLE, "Broker unavailable") from None
    return {"channel": channel, "members": members}


dev_router = APIRouter()


class TokenRequest(BaseModel):
    sub: str = Field(default="demo", min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=64)
    ttl: int = Field(default=3600, ge=1, le=86400)
    # Shown to others in presence and join/leave (the demo's member list): a few short strings.
    info: dict[str, str] | None = Field(default=None, max_length=8)


@dev_router.post("/dev/token", response_model=None)
async def dev_token(request: Request, body: TokenRequest | None = None) -> dict[str, str] | JSONResponse:
    """Dev mode only: mint a demo token. Not routed, nor listed in /docs, in production."""
    s = services(request)
    if not s.settings.jwt_secret.get_secret_value():
        # A key source replaced the secret: this instance verifies tokens it cannot sign.
        error = "no SWITCHBOARD_JWT_SECRET: tokens come from the identity provider (docs/auth.md)"
        return JSONResponse({"error": error}, status_code=409)
    req = body or TokenRequest()
    extra = {"info": req.info} if req.info else {}
    return {"token": mint_token(s.settings, req.sub, req.name, req.ttl, **extra), "token_type": "bearer"}
