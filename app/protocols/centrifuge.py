"""``/connection/websocket``: Centrifugo's client protocol, so that its SDKs connect as they are
(docs/sdks.md). A thin adapter over Session, like ``/ws``. In JSON, or in Protobuf for a client
that asks for ``centrifuge-protobuf``: only decoding (centrifuge_frames.py) and encoding differ.

A frame holds one or more commands, one JSON object a line: ``{"id":N,"<method>":{...}}`` (or
length-delimited Protobuf Commands). The first must be ``connect``. The server pings with ``{}``
every ``SWITCHBOARD_PING_INTERVAL`` and the client answers ``{}``. Disconnects are close frames
with Centrifugo's codes (``app.errors.CENTRIFUGE_CLOSES``).

The client logic is the transport's (app/protocols/centrifuge_transport.py): commands come in,
frames go out and the connection closes through it, so the emulated transports (HTTP-streaming
and SSE, with commands in ``POST /emulation``: app/protocols/emulation.py) run this same class.

The reader only reads: it notes pongs at once and hands frames to one worker, which runs their
commands in order, one at a time. The worker is a task only while frames wait (an idle connection
holds no task and no queue, as on ``/ws``: its keepalive is a timer, app/protocols/keepalive.py).
With ``MAX_QUEUED_FRAMES`` waiting the reading stops, so a client that sends faster than its
commands complete is held back by TCP, and what waits is at most that many frames of
``SWITCHBOARD_MAX_MESSAGE_BYTES``. Each command after a frame's first
is charged to the rate limit: 10,000 commands in one frame run no further than the limit allows
(the rest are answered 111, and a client that keeps on is closed 3501).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app import __version__, metrics
from app.broker import BrokerUnavailable
from app.connection import ConnectionGone
from app.errors import (
    CENTRIFUGE_CLOSES,
    CentrifugeDisconnect,
    CentrifugeError,
    CloseCode,
    ProtocolError,
)
from app.protocol import Wire
from app.protocols.centrifuge_codec import as_centrifuge, error_reply
from app.protocols.centrifuge_commands import COMMANDS, CommandError, Reply, async_message, expiry, token_identity
from app.protocols.centrifuge_formats import format_for
from app.protocols.centrifuge_frames import Frames, JsonFrames, MalformedFrame, Parsed, ProtobufFrames, take
from app.protocols.centrifuge_protobuf import SUBPROTOCOL
from app.protocols.centrifuge_signin import sign_in
from app.protocols.centrifuge_subs import connect_subs
from app.protocols.centrifuge_transport import Transport, WebSocketTransport
from app.protocols.handshake import run_session
from app.protocols.keepalive import Keepalive
from app.protocols.proxied import ProxyRefresh
from app.proxy import BackendDisconnect
from app.session import Session

log = logging.getLogger("switchboard.centrifuge")

ENDPOINT = "centrifuge"  # the endpoint label of this protocol's metrics
MAX_QUEUED_FRAMES = 4
JSON_FRAMES = JsonFrames()  # no state: one for every JSON connection
FIRST_NOT_CONNECT = "the first command must be connect, with an id"
VERSION = f"switchboard {__version__}"


class CentrifugeClient(Keepalive):
    """One connection on ``/connection/websocket``: connect, then commands in order, and pings."""

    __slots__ = (
        "_frames",
        "_refresh",
        "_room",
        "_worker",
        "conn",
        "decoder",
        "fmt",
        "session",
        "settings",
        "transport",
    )

    def __init__(self, session: Session, transport: Transport | None = None) -> None:
        self.session = session
        self.conn = session.conn
        self.settings = session.services.settings
        self._frames: list[Iterator[Parsed]] = []  # decoded lazily; a list, as an empty deque is 760 bytes
        self._worker: asyncio.Task[None] | None = None  # only while frames wait
        self._room: asyncio.Future[None] | None = None  # only while the reader waits for room
        self.fmt = format_for(session.wire)
        self.decoder: Frames = ProtobufFrames(self.settings.max_message_bytes) if self.fmt.binary else JSON_FRAMES
        self.transport: Transport = transport or WebSocketTransport(session.conn, binary=self.fmt.binary)
        self._timer = None
        self._awaiting_pong = False
        self._refresh: ProxyRefresh | None = None  # the refresh proxy renews a proxied identity
        self.conn.wire_codes = CENTRIFUGE_CLOSES
        self.conn.on_limited = self._limited

    def send(self, payload: bytes) -> None:
        self.transport.send(self.fmt.outgoing(payload))

    def close_with(self, code: int, reason: str | None = None) -> None:
        self.transport.close(code, reason)

    def error(self, cmd_id: int | None, code: int, message: str) -> None:
        self.send(error_reply(cmd_id, code, message, self.fmt))

    def refuse(self, cmd_id: int | None, code: int, message: str, close: int) -> bool:
        self.error(cmd_id, code, message)
        self.close_with(close, message)
        return False

    # -- connecting -------------------------------------------------------------------------------

    async def connect(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.auth_timeout):
                frame = await self.transport.receive()
        except TimeoutError:
            metrics.AUTH_FAILURES.labels("timeout").inc()
            self.close_with(CentrifugeDisconnect.BAD_REQUEST, "connect timeout")
            return False
        if frame is None:
            return False
        parsed = take(commands := self.decoder.commands(frame))
        if not isinstance(parsed, tuple) or parsed[1] != "connect" or not parsed[0]:
            broken = isinstance(parsed, MalformedFrame) and self.fmt.binary  # Protobuf says what broke
            self.close_with(CentrifugeDisconnect.BAD_REQUEST, str(parsed) if broken else FIRST_NOT_CONNECT)
            return False
        cmd_id = parsed[0]
        try:
            params = self.decoder.params(parsed[2])
        except CommandError as exc:
            return self.refuse(cmd_id, exc.code, exc.message, CentrifugeDisconnect.BAD_REQUEST)
        extra = await sign_in(self, cmd_id, params)
        if extra is None:
            return False
        identity = self.session.identity
        reply: dict[str, Any] = {"client": self.session.client, "version": VERSION, **expiry(identity), **extra}
        reply.update(self.transport.connect_fields())
        if subs := await connect_subs(self.session, params):  # the personal and the token's channels
            reply["subs"] = subs
        reply.update(ping=max(1, round(self.settings.ping_interval)), pong=True)
        # Before any push of the channels connect_subs joined (held back till now).
        self.conn.release(self.fmt.outgoing(self.fmt.reply(cmd_id, "connect", reply)))
        self._schedule_ping()
        self._hand(commands)  # any commands batched behind the connect
        return True

    def _expired(self) -> None:
        """A proxied identity the refresh proxy did not renew: as a token that expired."""
        metrics.AUTH_FAILURES.labels("expired").inc()
        self.close_with(CloseCode.TOKEN_EXPIRED)

    async def refresh(self, params: dict[str, Any]) -> Reply:
        """A fresh token for the same user: a new expiry, every channel checked again."""
        identity = await token_identity(self.session, params.get("token"))
        if not identity.user_id or identity.user_id != self.session.identity.user_id:
            raise CommandError(CentrifugeError.PERMISSION_DENIED, "the token is for another user")
        if self._refresh is not None:  # a token now: it expires as tokens do, not by the backend
            self._refresh.stop()
            self._refresh = None
        await self.session.refresh(identity)
        return {"client": self.session.client, "version": VERSION, **expiry(identity)}

    # -- keepalive --------------------------------------------------------------------------------

    def _send_ping(self) -> None:
        self.send(self.fmt.ping)

    def _no_pong(self) -> None:
        self.close_with(CentrifugeDisconnect.NO_PONG, "no pong")

    # -- commands ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        if not await self.connect():
            return
        try:
            while (frame := await self.transport.receive()) is not None:
                # Any frame shows the client is there, its pong ({}) too (the worker skips that).
                self._awaiting_pong = False
                if self.conn.close_code is not None and self._worker is None:
                    break  # closing, and no command running (one running stops at its end)
                commands = self.decoder.commands(frame)
                while len(self._frames) >= MAX_QUEUED_FRAMES and (worker := self._worker) is not None:
                    # Full: wait for room, or for the worker to stop (it returns when the
                    # connection closes, mid-frame), or the reader would wait here for ever.
                    room = self._room = asyncio.get_running_loop().create_future()
                    await asyncio.wait((room, worker), return_when=asyncio.FIRST_COMPLETED)
                    self._room = None
                    if not room.done():
                        return
                self._hand(commands)
        finally:
            if (worker := self._worker) is not None:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)

    def _hand(self, commands: Iterator[Parsed]) -> None:
        self._frames.append(commands)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work())

    async def _work(self) -> None:
        """The frames waiting, one at a time, in order; ends once none is left or on a close."""
        try:
            while self._frames:
                commands = self._frames.pop(0)
                if (room := self._room) is not None and not room.done():
                    room.set_result(None)
                first = True
                while True:
                    if self.conn.close_code is not None:
                        return
                    if isinstance(parsed := take(commands), MalformedFrame):
                        self.close_with(CentrifugeDisconnect.BAD_REQUEST, str(parsed))
                        return
                    if parsed is None:
                        break
                    if not parsed[1]:
                        continue  # a pong (or a blank line), noted by the reader
                    if not first and not self.conn.allow():
                        if parsed[0]:
                            self.error(parsed[0], CentrifugeError.TOO_MANY_REQUESTS, "rate limit exceeded")
                        continue
                    first = False
                    await self._run(*parsed)
        finally:
            self._worker = None

    async def _run(self, cmd_id: int, method: str, raw: Any) -> None:
        if not cmd_id:
            if method != "send":  # only send goes without a reply, so without an id
                self.close_with(CentrifugeDisconnect.BAD_REQUEST, "a command needs an id")
                return
            with contextlib.suppress(CommandError, BrokerUnavailable, ConnectionGone):
                await async_message(self.session, self.decoder.params(raw))  # to the rpc path; no reply
            return
        try:
            params = self.decoder.params(raw)
            if method == "connect":
                raise CommandError(CentrifugeError.BAD_REQUEST, "already connected")
            if method == "refresh":
                result = await self.refresh(params)
            elif method in COMMANDS:
                result = await COMMANDS[method](self.session, cmd_id, params)
            else:
                raise CommandError(CentrifugeError.METHOD_NOT_FOUND, "method not found")
        except CommandError as exc:
            self.error(cmd_id, exc.code, exc.message)
        except ProtocolError as exc:
            code, message = as_centrifuge(exc)
            self.error(cmd_id, code, message)
            if isinstance(exc, BackendDisconnect):  # a proxy's disconnect, with its 4000-4999 code
                self.close_with(exc.close_code, exc.reason)
        except BrokerUnavailable:
            self.error(cmd_id, CentrifugeError.NOT_AVAILABLE, "broker unavailable: try again")
        except ConnectionGone:
            pass
        except Exception:
            log.exception("/connection/websocket command %r failed", method)
            self.error(cmd_id, CentrifugeError.INTERNAL, "internal error")
        else:
            if result is not None:
                self.send(result if isinstance(result, bytes) else self.fmt.reply(cmd_id, method, result))

    def _limited(self, frame: str | bytes) -> None:
        """A frame over the rate limit: its first command is told 111. Only the first: a frame of
        10,000 commands dropped must not become 10,000 replies (the SDK fails the rest at their
        timeouts, as for a lost frame)."""
        parsed = take(self.decoder.commands(frame))
        if isinstance(parsed, tuple) and parsed[0]:
            self.error(parsed[0], CentrifugeError.TOO_MANY_REQUESTS, "rate limit exceeded")

    def close(self) -> None:
        self._stop_pings()
        if self._refresh is not None:
            self._refresh.stop()


async def endpoint(websocket: WebSocket) -> None:
    async def handler(session: Session) -> None:
        client = CentrifugeClient(session)
        try:
            await client.serve()
        finally:
            client.close()

    # Protobuf where the client asks for it (Centrifugo's SDKs do, in their Protobuf builds).
    protobuf = SUBPROTOCOL in websocket.scope.get("subprotocols", ())
    wire = Wire.CENTRIFUGE_PROTOBUF if protobuf else Wire.CENTRIFUGE
    await run_session(websocket, ENDPOINT, handler, wire=wire, subprotocol=SUBPROTOCOL if protobuf else None)


routes = [WebSocketRoute("/connection/websocket", endpoint)]
