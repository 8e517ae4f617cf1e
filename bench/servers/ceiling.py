"""The Python ceiling: the websockets library's own server and ``broadcast()``.

One process, no ASGI, no Redis: the same /ws/global/{channel} semantics (a ``{"content": C}``
frame reaches every member, the sender included, as ``{"content": C, "channel": ...}``), built the
way the websockets documentation shows, plus uvloop as Switchboard gets it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import defaultdict

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

members: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def handler(ws: ServerConnection) -> None:
    channel = ws.request.path.rsplit("/", 1)[-1] if ws.request else "default"
    room = members[channel]
    room.add(ws)
    try:
        async for message in ws:
            content = orjson.loads(message)["content"]
            broadcast(room, orjson.dumps({"content": content, "channel": channel}).decode())
    finally:
        room.discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(main(parser.parse_args().port))
