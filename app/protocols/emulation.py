"""``POST /emulation``: the commands of an emulated Centrifugo connection (HTTP-streaming or SSE,
app/protocols/centrifuge_streams.py), handed to its session wherever that lives.

The body is ``{"session": S, "node": N, "data": D}``: ``S`` and ``N`` are what the connect reply
said, ``D`` the commands as the WebSocket would carry them (one JSON object a line), as a string.
The request may reach any process of any instance (no sticky routing). ``N`` names the process
that holds the stream: if it is this one, the commands go into the session's inbox; otherwise
they travel on that process's own control channel, ``switchboard:emulation:<node>``, on the one
pub/sub connection every process already has, and that process answers on the asker's channel
once it has handed them over (or found no such session). Either way the POST is answered after
the hand-over, empty (204), like Centrifugo's; the replies go down the stream.

Bounds: the body is at most ``SWITCHBOARD_MAX_MESSAGE_BYTES``; a session holds at most
``StreamTransport``'s inbox of batches not yet run (429 past it); a remote process answers within
``ANSWER_TIMEOUT`` or the node counts as gone (404, and the SDK reconnects), and at most
``MAX_RELAYED`` relayed requests wait at once per process (503 past it). The session id is
the credential: ``secrets.token_urlsafe``, bound to its stream and forgotten when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app import metrics
from app.broker import BrokerUnavailable
from app.errors import (
    EMULATION_BUSY,
    EMULATION_ERRORS,
    EMULATION_MALFORMED,
    EMULATION_RELAYS_FULL,
    EMULATION_TOO_BIG,
    EMULATION_UNAVAILABLE,
    EMULATION_UNKNOWN_SESSION,
)
from app.hub import NO_HISTORY, Hub
from app.protocol import header
from app.protocols.centrifuge_transport import StreamTransport

log = logging.getLogger("switchboard.emulation")

PREFIX = "switchboard:emulation:"
ANSWER_TIMEOUT = 2.0  # seconds the asker waits for the session's process to take the commands
MAX_ID_CHARS = 128  # of a session or node id: ours are 32 and about 40
# Relayed requests one process waits on at once: each holds a POST for up to ANSWER_TIMEOUT, so
# requests naming nodes that do not exist must not pile up without end.
MAX_RELAYED = 1024
HANDED = "ok"
# What a hand-over may answer, as the short words the control channel carries.
OUTCOMES = {HANDED: None, "unknown": EMULATION_UNKNOWN_SESSION, "busy": EMULATION_BUSY}
WORDS = {message: word for word, message in OUTCOMES.items()}


class Emulation:
    """This process's emulated sessions, and the relay to other processes' (if there are any)."""

    def __init__(self, hub: Hub, instance_id: str, clustered: bool) -> None:
        # Per process, not per instance: a gunicorn instance's workers hold different sessions.
        self.node = f"{instance_id}.{secrets.token_hex(4)}"
        self._hub = hub
        self._clustered = clustered
        self._sessions: dict[str, StreamTransport] = {}
        self._asked: dict[str, asyncio.Future[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._clustered:
            await self._hub.add_control(PREFIX + self.node, self.on_frame)

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def add(self, transport: StreamTransport) -> None:
        self._sessions[transport.session_id] = transport

    def remove(self, transport: StreamTransport) -> None:
        self._sessions.pop(transport.session_id, None)

    def hand(self, session: str, data: str) -> str | None:
        """Into a local session's inbox: None once handed, else the refusal's message."""
        transport = self._sessions.get(session)
        if transport is None:
            return EMULATION_UNKNOWN_SESSION
        return None if transport.hand(data) else EMULATION_BUSY

    async def deliver(self, session: str, node: str, data: str) -> str | None:
        if node == self.node:
            return self.hand(session, data)
        if not self._clustered:
            return EMULATION_UNKNOWN_SESSION
        if len(self._asked) >= MAX_RELAYED:
            return EMULATION_RELAYS_FULL
        ask = secrets.token_hex(8)
        answered = asyncio.get_running_loop().create_future()
        self._asked[ask] = answered
        frame = orjson.dumps({"ask": ask, "from": self.node, "session": session, "data": data})
        try:
            await self._hub.broker.publish(PREFIX + node, header(), frame, NO_HISTORY)
            async with asyncio.timeout(ANSWER_TIMEOUT):
                word = await answered
        except BrokerUnavailable:
            return EMULATION_UNAVAILABLE
        except TimeoutError:
            return EMULATION_UNKNOWN_SESSION  # no live process answers for that node
        finally:
            self._asked.pop(ask, None)
        return OUTCOMES.get(word, EMULATION_UNKNOWN_SESSION)

    def on_frame(self, frame: bytes) -> None:
        """A relayed request for one of this process's sessions, or the answer to one of ours."""
        try:
            found = orjson.loads(frame)
            if "answer" in found:
                answered = self._asked.get(str(found["answer"]))
                if answered is not None and not answered.done():
                    answered.set_result(str(found["word"]))
                return
            ask, asker, session, data = (str(found[k]) for k in ("ask", "from", "session", "data"))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            metrics.LISTENER_ERRORS.inc()
            log.warning("dropped a malformed emulation frame")
            return
        word = WORDS[self.hand(session, data)]
        task = asyncio.create_task(self._answer(asker, orjson.dumps({"answer": ask, "word": word})))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, asker: str, frame: bytes) -> None:
        try:
            await self._hub.broker.publish(PREFIX + asker, header(), frame, NO_HISTORY)
        except BrokerUnavailable as exc:
            metrics.LISTENER_ERRORS.inc()
            log.warning("answering a relayed emulation request failed: %s", exc)


def refusal(message: str) -> Response:
    status, code = EMULATION_ERRORS[message]
    metrics.COMMAND_ERRORS.labels(str(int(code))).inc()
    body = orjson.dumps({"error": {"code": int(code), "message": message}})
    return Response(body, status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (read no further than that)."""
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > limit:
        return None
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                return None
            chunks.append(chunk)
    except ClientDisconnect:
        return b""  # gone mid-body: answered as malformed, to nobody, rather than with a traceback
    return b"".join(chunks)


def parse(body: bytes) -> tuple[str, str, str] | None:
    try:
        found: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(found, dict):
        return None
    session, node, data = found.get("session"), found.get("node"), found.get("data")
    if not isinstance(session, str) or not isinstance(node, str) or not isinstance(data, str):
        return None
    if not session or not node or len(session) > MAX_ID_CHARS or len(node) > MAX_ID_CHARS:
        return None
    return session, node, data


async def emulation(request: Request) -> Response:
    s = request.app.state.services
    body = await read_body(request, s.settings.max_message_bytes)
    if body is None:
        return refusal(EMULATION_TOO_BIG)
    parsed = parse(body)
    if parsed is None:
        return refusal(EMULATION_MALFORMED)
    refused = await s.emulation.deliver(*parsed)
    if refused is not None:
        return refusal(refused)
    return Response(status_code=204)


routes: list[BaseRoute] = [Route("/emulation", emulation, methods=["POST"])]
