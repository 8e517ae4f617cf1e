"""Centrifugo's HTTP API shape: ``POST /api/<method>`` and ``POST /api`` with ``{"method","params"}``.

The key and the body are checked as on ``/api/v1`` (app/routes/server_api.py): a missing or wrong
key is a 401 (``cent`` raises CentUnauthorizedError), a body over the limit a 413, one that is not
a JSON object a 400. Past that, as Centrifugo does, every answer is a 200: ``{"result":...}``, or
``{"error":{"code","message"}}`` with Centrifugo's server API codes (``cent`` raises
CentApiResponseError).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from app.api_methods import ApiError
from app.broker import BrokerUnavailable
from app.centrifugo_api import METHODS, CentrifugoError, error_code
from app.centrifugo_schemas import CommandReply, ErrorReply, reply
from app.errors import CentrifugeError, ProtocolError
from app.routes.server_api import read_body, require_key
from app.services import Services

router = APIRouter(tags=["Centrifugo server API"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorReply, "description": "the body is not a JSON object"},
    401: {"model": ErrorReply, "description": "missing or wrong API key"},
    413: {"model": ErrorReply, "description": "body over the size limit"},
}


def _error(code: int, message: str) -> Response:
    return Response(orjson.dumps({"error": {"code": code, "message": message}}), media_type="application/json")


async def run(method: str, raw: object, s: Services) -> Response:
    """One method on parsed params: its result, or its error as Centrifugo words it."""
    model, call, _, _ = METHODS[method]
    try:
        result = await call(s, model.model_validate(raw if raw is not None else {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "params"
        return _error(CentrifugeError.BAD_REQUEST, f"{where}: {err['msg']}")
    except (ApiError, ProtocolError) as exc:
        return _error(error_code(exc.code), exc.message)
    except CentrifugoError as exc:
        return _error(exc.code, exc.message)
    except BrokerUnavailable:
        return _error(CentrifugeError.NOT_AVAILABLE, "broker unavailable: try again")
    return Response(orjson.dumps({"result": result}), media_type="application/json")


def inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its ``$defs`` written in place: a request body's ``#/$defs/...`` reference
    is not resolvable from inside the OpenAPI document (nested params: ``since``, ``disconnect``)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    found: dict[str, Any] = walk(schema)
    return found


def _route(method: str) -> None:
    model, _, summary, result = METHODS[method]

    async def endpoint(request: Request, s: Services = Security(require_key)) -> Response:
        return await run(method, await read_body(request, s), s)

    router.add_api_route(
        f"/api/{method}",
        endpoint,
        methods=["POST"],
        name=f"centrifugo_{method}",
        summary=summary,
        response_class=JSONResponse,
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": inlined(model.model_json_schema())}},
            }
        },
        responses={200: {"model": reply(method.title().replace("_", ""), result), "description": "done"}, **ERRORS},
    )


for _method in METHODS:
    _route(_method)


COMMAND_SCHEMA = {
    "type": "object",
    "properties": {"method": {"type": "string", "enum": sorted(METHODS)}, "params": {"type": "object"}},
    "required": ["method"],
}


@router.post(
    "/api",
    summary='Any method: `{"method":M,"params":{...}}`, as Centrifugo\'s single endpoint takes it.',
    response_class=JSONResponse,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": COMMAND_SCHEMA}}}},
    responses={200: {"model": CommandReply, "description": "done"}, **ERRORS},
)
async def command(request: Request, s: Services = Security(require_key)) -> Response:
    body = await read_body(request, s)
    method = body.get("method")
    if not isinstance(method, str) or method not in METHODS:
        return _error(CentrifugeError.METHOD_NOT_FOUND, "method not found")
    return await run(method, body.get("params"), s)
