"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app import metrics
from app.api_schemas import ReadyReply
from app.services import services

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the event loop answers. Never depends on Redis, or a Redis blip restarts pods."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"model": ReadyReply, "description": "ready: the broker is up and the instance is not draining"},
        503: {"model": ReadyReply, "description": "not ready"},
    },
)
async def readyz(request: Request) -> JSONResponse:
    s = services(request)
    ready = s.ready()
    body = {"status": "ready" if ready else "unavailable", "broker": s.broker.healthy(), "draining": s.draining}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    if services(request).settings.metrics_port:
        return JSONResponse({"error": "Metrics are served on SWITCHBOARD_METRICS_PORT"}, status_code=404)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
