"""The backend of the connect-proxy storm (bench/proxy_storm.py): a FastAPI app under uvicorn.

It answers Centrifugo's connect shape from a ``session`` cookie after a short pause (a session
lookup), and counts calls, distinct sessions and calls in flight.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI, Request

app = FastAPI()
LOOKUP_SECONDS = float(os.environ.get("BENCH_LOOKUP_SECONDS", "0.002"))
state: dict[str, Any] = {"calls": 0, "inflight": 0, "max_inflight": 0}
sessions: dict[str, int] = {}


@app.post("/connect")
async def connect(request: Request) -> dict[str, Any]:
    state["calls"] += 1
    state["inflight"] += 1
    state["max_inflight"] = max(state["max_inflight"], state["inflight"])
    try:
        session = request.cookies.get("session", "")
        sessions[session] = sessions.get(session, 0) + 1
        await asyncio.sleep(LOOKUP_SECONDS)
        return {"result": {"user": f"user-{session}"}}
    finally:
        state["inflight"] -= 1


@app.get("/stats")
async def stats() -> dict[str, Any]:
    return {**state, "sessions": len(sessions), "most_per_session": max(sessions.values(), default=0)}


@app.post("/reset")
async def reset() -> dict[str, str]:
    state.update(calls=0, inflight=0, max_inflight=0)
    sessions.clear()
    return {"status": "reset"}
