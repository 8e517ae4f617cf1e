"""A real FastAPI backend for the proxy tests, run with uvicorn on a free port by the test.

It answers Centrifugo's proxy shapes, and its behaviour is chosen by what the client sent: the
connect command's ``data.do``, the channel (``px:deny``), the rpc method, or the user id for a
refresh. It records every request and counts calls in flight, so tests can assert the bound.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

app = FastAPI()
state: dict[str, Any] = {"inflight": 0, "max_inflight": 0, "calls": {}, "last": {}}


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


async def _answer(behaviour: str, result: dict[str, Any]) -> Response:
    """The common behaviours; ``allow`` answers ``result``."""
    if behaviour == "deny":
        return _json({"error": {"code": 1403, "message": "not on my watch"}})
    if behaviour == "disconnect":
        return _json({"disconnect": {"code": 4501, "reason": "unauthorized"}})
    if behaviour == "slow":
        await asyncio.sleep(3)  # past the proxy timeout; short, so that uvicorn stops soon
    if behaviour == "5xx":
        return _json({"detail": "boom"}, 503)
    if behaviour == "malformed":
        return Response(b"<html>not json</html>", media_type="text/html")
    if behaviour == "badcode":
        return _json({"error": {"code": 100, "message": "a Switchboard code from a backend"}})
    if behaviour == "hold":
        await asyncio.sleep(0.25)
    return _json({"result": result})


@app.middleware("http")
async def count(request: Request, call_next: Any) -> Response:
    kind = request.url.path.strip("/")
    if request.method == "POST" and kind in ("connect", "refresh", "subscribe", "publish", "rpc"):
        body = orjson.loads(await request.body())
        state["calls"][kind] = state["calls"].get(kind, 0) + 1
        state["last"][kind] = {"body": body, "headers": dict(request.headers)}
        state["inflight"] += 1
        state["max_inflight"] = max(state["max_inflight"], state["inflight"])
        try:
            response: Response = await call_next(request)
            return response
        finally:
            state["inflight"] -= 1
    response = await call_next(request)
    return response


@app.post("/connect")
async def connect(request: Request) -> Response:
    data = orjson.loads(await request.body()).get("data") or {}
    user = data.get("user", "alice")
    result: dict[str, Any] = {
        "user": user,
        "name": user.title(),
        "channels": data.get("channels", ["team:*"]),
        "info": {"plan": "pro"},
        "data": {"welcome": user},
    }
    if data.get("ttl"):
        result["expire_at"] = int(time.time() + data["ttl"])
    return await _answer(data.get("do", "allow"), result)


@app.post("/refresh")
async def refresh(request: Request) -> Response:
    user = orjson.loads(await request.body())["user"]
    if user == "refresh-expired":
        return _json({"result": {"expired": True}})
    if user == "refresh-5xx":
        return _json({}, 500)
    return _json({"result": {"expire_at": int(time.time() + 600), "info": {"plan": "renewed"}}})


@app.post("/subscribe")
async def subscribe(request: Request) -> Response:
    channel = orjson.loads(await request.body())["channel"]
    return await _answer(channel.split(":")[1].split("-")[0], {})


@app.post("/publish")
async def publish(request: Request) -> Response:
    body = orjson.loads(await request.body())
    behaviour, data = body["channel"].split(":")[1].split("-")[0], body["data"]
    if behaviour == "rewrite":
        return _json({"result": {"data": {"text": str(data.get("text", "")).upper(), "checked": True}}})
    if behaviour == "b64":
        return _json({"result": {"b64data": base64.b64encode(b'{"from":"b64"}').decode()}})
    return await _answer(behaviour, {})


@app.post("/rpc")
async def rpc(request: Request) -> Response:
    body = orjson.loads(await request.body())
    behaviour = body["method"].removeprefix("backend.")
    return await _answer(behaviour, {"data": {"echo": body.get("data"), "user": body["user"]}})


@app.get("/stats")
async def stats() -> dict[str, Any]:
    return state


@app.post("/reset")
async def reset() -> dict[str, str]:
    state.update(inflight=0, max_inflight=0, calls={}, last={})
    return {"status": "reset"}
