"""``POST /api/v1/<method>``: the server API's HTTP layer (methods in ``app/api_methods.py``).

In this order, so that nothing is read for a caller without a key:

1. the API key (``X-API-Key: K`` or ``Authorization: apikey K``), compared in constant time with
   every configured key; a user's JWT is never a key (401);
2. the body, capped at ``MAX_MESSAGE_BYTES`` plus an allowance, by ``Content-Length`` and again
   while reading (a chunked body has none): 413;
3. JSON: not JSON (NaN included), nested too deep, or not an object: 400;
4. the method's model: 400 naming the field.

Every error body is ``{"error":{"code":C,"message":M}}`` with the protocol's code, never a 500.
"""

from __future__ import annotations

import difflib
import hmac
from typing import Any

import orjson
from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import ValidationError

from app import metrics
from app.api_methods import METHODS, STATUS, ApiError
from app.api_schemas import errors
from app.broker import BrokerUnavailable
from app.errors import ErrorCode, ProtocolError
from app.protocols.switchboard_commands import history_reply
from app.services import Services, services

BODY_ALLOWANCE = 4096  # field names and framing around a MAX_MESSAGE_BYTES payload
_x_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="A key from SWITCHBOARD_API_KEYS")
_authorization = APIKeyHeader(name="Authorization", auto_error=False, description="`apikey <key>`")

router = APIRouter(tags=["server API"])


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body = {"error": {"code": int(exc.code), "message": exc.message, **exc.extra}}
    return JSONResponse(body, status_code=exc.status)


def require_key(
    request: Request,
    x_api_key: str | None = Security(_x_api_key),
    authorization: str | None = Security(_authorization),
) -> Services:
    """The caller's key, checked before anything else about the request is looked at."""
    s = services(request)
    given = x_api_key
    if given is None and authorization is not None:
        scheme, _, value = authorization.partition(" ")
        given = value.strip() if scheme.lower() == "apikey" else None
    if not given or not _known(given.encode(), s):
        metrics.AUTH_FAILURES.labels("api_key").inc()
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "missing or wrong API key (X-API-Key or Authorization: apikey)")
    return s


def _known(given: bytes, s: Services) -> bool:
    # Compare with every key, whatever matches first: the time taken says nothing about which.
    found = False
    for key in s.settings.api_keys:
        found |= hmac.compare_digest(given, key.get_secret_value().encode())
    return found


async def read_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        status = 413 if declared.isdigit() else 400
        raise ApiError(status, ErrorCode.LIMIT_EXCEEDED, f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, ErrorCode.LIMIT_EXCEEDED, f"body over {limit} bytes")
    if not body:
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, ErrorCode.BAD_REQUEST, "the body is not valid JSON (or nested too deep)") from None
    if not isinstance(value, dict):
        raise ApiError(400, ErrorCode.BAD_REQUEST, "the body must be a JSON object")
    return value


async def call(method: str, request: Request, s: Services) -> Response:
    return await run_method(method, await read_body(request, s), s)


async def read_body(request: Request, s: Services) -> dict[str, Any]:
    return await read_object(request, s.settings.max_message_bytes + BODY_ALLOWANCE)


async def run_method(method: str, raw: dict[str, Any], s: Services) -> Response:
    """One method on a parsed body: the server API's route and the admin UI both come here."""
    model, run, _, _ = METHODS[method]
    try:
        body = model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "body"
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"{where}: {err['msg']}") from None
    try:
        result = await run(s, body)
    except ProtocolError as exc:
        raise ApiError(STATUS.get(exc.code, 400), exc.code, exc.message) from None
    except BrokerUnavailable:
        raise ApiError(503, ErrorCode.NOT_AVAILABLE, "broker unavailable: try again") from None
    if method == "history":
        pubs, position = result
        return Response(history_reply(b"{", pubs, position), media_type="application/json")
    return Response(orjson.dumps(result), media_type="application/json")


# What any API-key route may answer besides its success (tests/integration/test_schema_fuzz.py).
API_ERRORS = errors(
    {
        400: "bad body",
        401: "missing or wrong API key",
        413: "body or data over the size limit",
        422: "invalid or reserved channel name, or unknown namespace",
        429: "too many cluster questions (top_channels, user_connections) at once",
        503: "broker unavailable (a publish's outcome is unknown)",
    }
)


def _route(method: str) -> None:
    model, _, summary, reply = METHODS[method]

    async def endpoint(request: Request, s: Services = Security(require_key)) -> Response:
        return await call(method, request, s)

    schema = model.model_json_schema()
    router.add_api_route(
        f"/api/v1/{method}",
        endpoint,
        methods=["POST"],
        name=f"api_{method}",
        summary=summary,
        response_class=JSONResponse,
        openapi_extra={"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}},
        responses={200: {"model": reply, "description": "done"}, **API_ERRORS},
    )


for _method in METHODS:
    _route(_method)


@router.post("/api/v1/{method}", include_in_schema=False)
async def unknown_method(method: str, s: Services = Security(require_key)) -> Response:
    # The list is in the reply itself: /docs is off outside dev mode.
    closest = difflib.get_close_matches(method, METHODS, n=1, cutoff=0.6)
    guess = f" (did you mean {closest[0]!r}?)" if closest else ""
    message = f'no method {method[:64]!r}{guess}; the methods are in "methods"'
    raise ApiError(404, ErrorCode.UNKNOWN_OP, message, methods=sorted(METHODS))
