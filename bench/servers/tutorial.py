"""The tutorial's cross-instance pattern, as users copy it: run with ``uvicorn bench.servers.tutorial:app``.

A per-process list of sockets, a Redis subscription per socket, and ``send_json`` per socket (so a
message is JSON-encoded once per socket). Redis URL from REDIS_URL.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict

import redis.asyncio as redis
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()
client = redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), max_connections=20000)


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: defaultdict[str, list[WebSocket]] = defaultdict(list)

    async def connect(self, websocket: WebSocket, channel: str) -> None:
        await websocket.accept()
        self.active_connections[channel].append(websocket)

    def disconnect(self, websocket: WebSocket, channel: str) -> None:
        self.active_connections[channel].remove(websocket)


manager = ConnectionManager()


@app.websocket("/ws/global/{channel}")
async def global_channel(websocket: WebSocket, channel: str) -> None:
    await manager.connect(websocket, channel)
    pubsub = client.pubsub()
    await pubsub.subscribe(f"global:{channel}")

    async def forward() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                await websocket.send_json(json.loads(message["data"]))

    listener = asyncio.create_task(forward())
    try:
        while True:
            data = await websocket.receive_json()
            await client.publish(f"global:{channel}", json.dumps({"content": data["content"], "channel": channel}))
    except WebSocketDisconnect:
        pass
    finally:
        manager.disconnect(websocket, channel)
        listener.cancel()
        await pubsub.aclose()
