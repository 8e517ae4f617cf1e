"""``/connection/websocket``: Centrifugo's client protocol (JSON), so that its SDKs connect as they
are (docs/sdks.md). A thin adapter over Session, like ``/ws``.

A frame holds one or more commands, one JSON object a line: ``{"id":N,"<method>":{...}}``. The
first must be ``connect``. The server pings with ``{}`` every ``SWITCHBOARD_PING_INTERVAL`` and
the client answers ``{}``. Disconnects are close frames with Centrifugo's codes
(``app.errors.CENTRIFUGE_CLOSES``).

The reader only reads: it notes pongs at once and hands frames to one worker through a queue of
``MAX_QUEUED_FRAMES``, which runs their commands in order. A full queue stops the reading, so a
client that sends faster than its commands complete is held back by TCP, and what waits is at
most that many frames of ``SWITCHBOARD_MAX_MESSAGE_BYTES``. Each command after a frame's first
is charged to the rate limit: 10,000 commands in one frame run no further than the limit allows
(the rest are answered 111, and a client that keeps on is closed 3501).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app import __version__, metrics
from app.auth import AuthError, Identity
from app.broker import BrokerUnavailable
from app.connection import ConnectionGone
from app.errors import (
    CENTRIFUGE_CLOSES,
    CentrifugeDisconnect,
    CentrifugeError,
    CloseCode,
    ProtocolError,
)
from app.hooks import UNCHANGED
from app.protocol import Wire
from app.protocols.centrifuge_codec import as_centrifuge, emulated_headers, error_reply, parse_command
from app.protocols.centrifuge_commands import COMMANDS, CommandError, Reply, expiry
from app.protocols.handshake import run_session
from app.protocols.proxied import ProxyRefresh, connect_by_proxy, connect_close, proxied_reply
from app.proxy import BackendDisconnect
from app.session import Session

log = logging.getLogger("switchboard.centrifuge")

ENDPOINT = "centrifuge"  # the endpoint label of this protocol's metrics
MAX_QUEUED_FRAMES = 4
PING = b"{}"
VERSION = f"switchboard {__version__}"


class CentrifugeClient:
    """One connection on ``/connection/websocket``: connect, then commands in order, and pings."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.conn = session.conn
        self.settings = session.services.settings
        self._frames: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_pong = False
        self._refresh: ProxyRefresh | None = None  # the refresh proxy renews a proxied identity
        self.conn.wire_codes = CENTRIFUGE_CLOSES
        self.conn.on_limited = self._limited

    def send(self, payload: bytes) -> None:
        self.conn.send_text(payload)

    def refuse(self, cmd_id: int | None, code: int, message: str, close: int) -> bool:
        self.send(error_reply(cmd_id, code, message))
        self.conn.close(close, message)
        return False

    # -- connecting -------------------------------------------------------------------------------

    async def connect(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.auth_timeout):
                text = await self.conn.receive_text()
        except TimeoutError:
            metrics.AUTH_FAILURES.labels("timeout").inc()
            self.conn.close(CentrifugeDisconnect.BAD_REQUEST, "connect timeout")
            return False
        if text is None:
            return False
        lines = text.split("\n")
        parsed = parse_command(lines[0])
        if parsed is None or parsed[1] != "connect" or not parsed[0]:
            self.conn.close(CentrifugeDisconnect.BAD_REQUEST, "the first command must be connect, with an id")
            return False
        cmd_id, _, params = parsed
        extra = await self._sign_in(cmd_id, params)
        if extra is None:
            return False
        identity = self.session.identity
        reply: dict[str, Any] = {"client": self.session.client, "version": VERSION, **expiry(identity), **extra}
        reply.update(ping=max(1, round(self.settings.ping_interval)), pong=True)
        self.send(orjson.dumps({"id": cmd_id, "connect": reply}))
        self._schedule_ping()
        rest = "\n".join(lines[1:]).strip()
        if rest:  # commands batched behind the connect
            self._frames.put_nowait(rest)
        return True

    async def _sign_in(self, cmd_id: int, params: dict[str, Any]) -> dict[str, Any] | None:
        """Who the client is: its token, or (without one) the connect proxy, as on ``/ws``. The
        connect reply's extra fields (the proxy's ``data``); None once refused and closing."""
        token, extra = params.get("token") or None, cast(dict[str, Any], {})
        headers, self.session.handshake = self.session.handshake, None  # read once, never kept
        proxied = token is None and headers is not None
        try:
            if proxied:
                assert headers is not None
                # Centrifugo's emulated headers: only the names SWITCHBOARD_PROXY_EMULATED_HEADERS
                # lists, and never in place of a real handshake header (a gateway's X-Forwarded-For).
                emulated = emulated_headers(params.get("headers"), self.session.services.proxies.emulated)
                headers = {**emulated, **headers}
                connected = await connect_by_proxy(self.session, params.get("data", UNCHANGED), headers)
                identity = connected.identity
                self._refresh, extra = proxied_reply(self.session, connected, self._expired)
            else:
                identity = await self.identity(token)
            self.session.set_identity(identity)
            await self.session.permissions.check_connect(self.session)
            if not await self.session.sign_in(identity):
                limit = CentrifugeDisconnect.CONNECTION_LIMIT
                self.refuse(cmd_id, CentrifugeError.LIMIT_EXCEEDED, "this user has too many connections", limit)
                return None
        except CommandError as exc:
            close = CentrifugeDisconnect.EXPIRED if exc.code is CentrifugeError.TOKEN_EXPIRED else None
            self.refuse(cmd_id, exc.code, exc.message, close or CentrifugeDisconnect.INVALID_TOKEN)
            return None
        except ProtocolError as exc:  # the connect hook or proxy said no
            code, message = as_centrifuge(exc)
            shut, reason = connect_close(exc)  # a backend's own code, or 1013 (3004) if it failed
            if shut == CloseCode.POLICY_VIOLATION:  # a refusal: the proxy's is the token's
                refused = CentrifugeDisconnect.INVALID_TOKEN if proxied else CentrifugeDisconnect.FORCE_NO_RECONNECT
                shut = int(refused)
            self.send(error_reply(cmd_id, code, message))
            self.conn.close(shut, reason)
            return None
        except BrokerUnavailable:
            message = "broker unavailable: try again"
            self.refuse(cmd_id, CentrifugeError.NOT_AVAILABLE, message, CentrifugeDisconnect.SERVER_ERROR)
            return None
        return extra

    def _expired(self) -> None:
        """A proxied identity the refresh proxy did not renew: as a token that expired."""
        metrics.AUTH_FAILURES.labels("expired").inc()
        self.conn.close(CloseCode.TOKEN_EXPIRED)

    async def identity(self, token: object) -> Identity:
        """The connection token's identity; an empty or absent one is anonymous, if allowed."""
        if token in (None, "") and self.settings.allow_anonymous:
            return self.session.identity
        if not isinstance(token, str) or not token:
            metrics.AUTH_FAILURES.labels("missing").inc()
            raise CommandError(CentrifugeError.UNAUTHORIZED, "token required")
        try:
            return await self.session.services.auth.verify(token)
        except AuthError as exc:
            metrics.AUTH_FAILURES.labels(exc.reason).inc()
            if exc.reason == "expired":
                raise CommandError(CentrifugeError.TOKEN_EXPIRED, "token expired") from None
            raise CommandError(CentrifugeError.UNAUTHORIZED, f"bad token: {exc.detail}") from None

    async def refresh(self, params: dict[str, Any]) -> Reply:
        """A fresh token for the same user: a new expiry, every channel checked again."""
        identity = await self.identity(params.get("token"))
        if not identity.user_id or identity.user_id != self.session.identity.user_id:
            raise CommandError(CentrifugeError.PERMISSION_DENIED, "the token is for another user")
        if self._refresh is not None:  # a token now: it expires as tokens do, not by the backend
            self._refresh.stop()
            self._refresh = None
        await self.session.refresh(identity)
        return {"client": self.session.client, "version": VERSION, **expiry(identity)}

    # -- keepalive --------------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.settings.ping_interval, self._ping)

    def _ping(self) -> None:
        self._awaiting_pong = True
        self.send(PING)
        self._timer = asyncio.get_running_loop().call_later(self.settings.heartbeat_timeout, self._check_pong)

    def _check_pong(self) -> None:
        if self._awaiting_pong:
            self.conn.close(CentrifugeDisconnect.NO_PONG, "no pong")
        else:
            self._schedule_ping()

    # -- commands ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        if not await self.connect():
            return
        worker = asyncio.create_task(self._work())
        try:
            while (text := await self.conn.receive_text()) is not None:
                # Any frame shows the client is there, its pong ({}) too (the worker skips that).
                self._awaiting_pong = False
                if worker.done():
                    break  # the worker stopped: the connection is closing
                if not self._frames.full():
                    self._frames.put_nowait(text)
                    continue
                # A full queue: wait for room, or for the worker to stop (it returns when the
                # connection closes, mid-frame), or the reader would wait here for ever.
                put = asyncio.ensure_future(self._frames.put(text))
                await asyncio.wait((put, worker), return_when=asyncio.FIRST_COMPLETED)
                if not put.done():
                    put.cancel()
                    break
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            text = await self._frames.get()
            first = True
            for line in text.split("\n"):
                if not line.strip():
                    continue
                if self.conn.close_code is not None:
                    return
                parsed = parse_command(line)
                if parsed is None:
                    self.conn.close(CentrifugeDisconnect.BAD_REQUEST, "malformed command")
                    return
                if not parsed[1]:
                    continue  # a pong, noted by the reader
                if not first and not self.conn.allow():
                    if parsed[0]:
                        self.send(error_reply(parsed[0], CentrifugeError.TOO_MANY_REQUESTS, "rate limit exceeded"))
                    continue
                first = False
                await self._run(*parsed)

    async def _run(self, cmd_id: int, method: str, params: dict[str, Any]) -> None:
        if not cmd_id:
            if method != "send":  # only send goes without a reply, so without an id
                self.conn.close(CentrifugeDisconnect.BAD_REQUEST, "a command needs an id")
            return  # send: no handler of async messages yet (docs/sdks.md); it has no reply
        try:
            if method == "connect":
                raise CommandError(CentrifugeError.BAD_REQUEST, "already connected")
            if method == "refresh":
                result = await self.refresh(params)
            elif method in COMMANDS:
                result = await COMMANDS[method](self.session, cmd_id, params)
            else:
                raise CommandError(CentrifugeError.METHOD_NOT_FOUND, "method not found")
        except CommandError as exc:
            self.send(error_reply(cmd_id, exc.code, exc.message))
        except ProtocolError as exc:
            code, message = as_centrifuge(exc)
            self.send(error_reply(cmd_id, code, message))
            if isinstance(exc, BackendDisconnect):  # a proxy's disconnect, with its 4000-4999 code
                self.conn.close(exc.close_code, exc.reason)
        except BrokerUnavailable:
            self.send(error_reply(cmd_id, CentrifugeError.NOT_AVAILABLE, "broker unavailable: try again"))
        except ConnectionGone:
            pass
        except Exception:
            log.exception("/connection/websocket command %r failed", method)
            self.send(error_reply(cmd_id, CentrifugeError.INTERNAL, "internal error"))
        else:
            if result is not None:
                self.send(result if isinstance(result, bytes) else orjson.dumps({"id": cmd_id, method: result}))

    def _limited(self, text: str) -> None:
        """A frame over the rate limit: its first command is told 111. Only the first: a frame of
        10,000 commands dropped must not become 10,000 replies (the SDK fails the rest at their
        timeouts, as for a lost frame)."""
        parsed = parse_command(text.split("\n", 1)[0])
        if parsed is not None and parsed[0]:
            self.send(error_reply(parsed[0], CentrifugeError.TOO_MANY_REQUESTS, "rate limit exceeded"))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._refresh is not None:
            self._refresh.stop()


async def endpoint(websocket: WebSocket) -> None:
    async def handler(session: Session) -> None:
        client = CentrifugeClient(session)
        try:
            await client.serve()
        finally:
            client.close()

    await run_session(websocket, ENDPOINT, handler, wire=Wire.CENTRIFUGE)


routes = [WebSocketRoute("/connection/websocket", endpoint)]
