"""The second Python ceiling: a minimal room server on picows (a Cython WebSocket library).

One process, no ASGI, no Redis, the same /ws/global/{channel} semantics as bench/servers/ceiling.py:
a ``{"content": C}`` frame reaches every member, the sender included, as
``{"content": C, "channel": ...}``. The JSON is encoded once per message; picows frames it per
socket in C (``WSTransport.send``), the way its documentation shows. uvloop, as everywhere here.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

members: defaultdict[bytes, set[WSTransport]] = defaultdict(set)


class Member(WSListener):
    def __init__(self, channel: bytes) -> None:
        self.channel = channel
        self.name = channel.decode()
        self.room = members[channel]

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.room.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.room.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            content = orjson.loads(frame.get_payload_as_bytes())["content"]
            out = orjson.dumps({"content": content, "channel": self.name})
            for member in self.room:
                member.send(WSMsgType.TEXT, out)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


def listener(request: WSUpgradeRequest) -> Member | None:
    prefix, _, channel = request.path.rpartition(b"/")
    return Member(channel) if prefix == b"/ws/global" and channel else None


async def main(port: int) -> None:
    server = await ws_create_server(listener, "127.0.0.1", port, websocket_handshake_timeout=30)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(main(parser.parse_args().port))
