"""``/ws``: the Switchboard protocol (docs/protocol.md), an adapter over Session.

Frames in are commands ``{"id":N,"op":...}``; frames out are replies with the same ``id`` or
pushes with an ``op``. The reader does not wait on a command: each runs as a task chained behind
the previous one's *turn*, so commands take effect in the order sent (a publish after a subscribe
sees it) while the socket keeps being read (``pong`` and rate limits apply at once). A command's
turn ends when it is done, except a resuming ``subscribe``'s: it ends once the client is in the
channel, before the replay, so a paced replay does not hold the commands after it. With
``MAX_IN_FLIGHT`` commands, or ``SWITCHBOARD_MAX_IN_FLIGHT_BYTES`` of them, waiting, reading
pauses until one of them is done, so a client that pipelines faster than its commands complete is
held back by TCP and its memory stays bounded. A command that has to wait for an earlier one (a
resume's replay paced by a client that stopped reading) waits as its frame's text, parsed again
at its turn: parsed JSON can take 25 times the bytes of its text (``[{},{},...]``), so holding the
parsed form would make the byte bound 25 times weaker. An ``id`` may not repeat while its command
is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app import metrics, tracing
from app.auth import Identity
from app.broker import BrokerUnavailable
from app.budgets import InFlight
from app.errors import AUTH_TIMEOUT, CloseCode, ErrorCode, ProtocolError
from app.hooks import UNCHANGED
from app.permissions import personal_channel
from app.protocols.handshake import run_session
from app.protocols.keepalive import Keepalive
from app.protocols.proxied import ProxyRefresh, connect_by_proxy, connect_close, proxied_reply
from app.protocols.switchboard_codec import command_error, command_id, connect_hint, error_bytes, identify, parse_frame
from app.protocols.switchboard_commands import COMMANDS, Reply, reply_bytes, subscribe
from app.proxy import BackendDisconnect
from app.session import Session
from app.timers import Timer

log = logging.getLogger("switchboard.ws")

MAX_IN_FLIGHT = 32
PING_PUSH = b'{"op":"ping"}'


class WsClient(Keepalive):
    """The ``/ws`` side of one connection: command scheduling, keepalive and token expiry."""

    __slots__ = ("_in_flight", "_last", "_load", "_refresh", "authorization_header", "conn", "session", "settings")

    def __init__(self, session: Session, authorization_header: bool = False) -> None:
        self.session = session
        self.authorization_header = authorization_header
        self.conn = session.conn
        self.settings = session.services.settings
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._last: asyncio.Future[None] | None = None  # the turn of the last command scheduled
        self._load = InFlight(MAX_IN_FLIGHT, self.settings.max_in_flight_bytes)
        self._timer: Timer | None = None
        self._awaiting_pong = False
        self._refresh: ProxyRefresh | None = None  # the refresh proxy renews a proxied identity
        self.conn.on_limited = self._limited

    def send(self, payload: bytes) -> None:
        self.conn.send_text(payload)

    # -- connecting -------------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Wait for ``connect``; reply, or refuse with an error reply and 1008."""
        try:
            async with asyncio.timeout(self.settings.auth_timeout):
                text = await self.conn.receive_text()
        except TimeoutError:
            metrics.AUTH_FAILURES.labels("timeout").inc()
            self.conn.close(CloseCode.POLICY_VIOLATION, AUTH_TIMEOUT)
            return False
        if text is None:
            return False
        frame = parse_frame(text)
        cmd_id = command_id(frame) if frame is not None else None
        if frame is None or frame.get("op") != "connect" or cmd_id is None:
            # Another op first is "not connected" (101); a malformed frame or connect is 107.
            other_op = frame is not None and frame.get("op") not in (None, "connect")
            code = ErrorCode.UNAUTHORIZED if other_op else ErrorCode.BAD_REQUEST
            self.send(error_bytes(cmd_id, code, "the first command must be connect, with an id"))
            self.conn.close(CloseCode.POLICY_VIOLATION, "Connect required")
            return False
        with tracing.span("ws connect", attributes={"switchboard.client": self.session.client}) as span:
            connected = await self._connect(cmd_id, frame)
            if span is not None:
                span.set_attribute("switchboard.connected", connected)
        return connected

    async def _connect(self, cmd_id: int, frame: dict[str, Any]) -> bool:
        """The connect command's checks, identity and reply (or refusal and 1008)."""
        token = frame.get("token", self.conn.websocket.query_params.get("token"))
        extra: dict[str, Any] = {}
        headers, self.session.handshake = self.session.handshake, None  # read once, never kept
        hint = connect_hint(frame, self.session.client, header=self.authorization_header, proxied=headers is not None)
        try:
            if token is None and headers is not None:
                connected = await connect_by_proxy(self.session, frame.get("data", UNCHANGED), headers)
                identity = connected.identity
                self._refresh, extra = proxied_reply(self.session, connected, self._expired)
            else:
                identity = await self._identity(token)
            self.session.set_identity(identity)
            await self.session.permissions.check_connect(self.session)
            if not await self.session.sign_in(identity):
                self.send(error_bytes(cmd_id, ErrorCode.LIMIT_EXCEEDED, "this user has too many connections"))
                self.conn.close(CloseCode.USER_LIMIT)
                return False
        except ProtocolError as exc:
            # "token required" with the token in a header is the case a hint is most needed for.
            self.send(error_bytes(cmd_id, exc.wire_code, exc.message, **({"hint": hint} if hint else {})))
            self.conn.close(*connect_close(exc))
            return False
        except BrokerUnavailable:
            self.send(error_bytes(cmd_id, ErrorCode.NOT_AVAILABLE, "broker unavailable: try again"))
            self.conn.close(CloseCode.TRY_AGAIN_LATER)
            return False
        reply: dict[str, Any] = {
            "client": self.session.client,
            "user": identity.user_id,
            "expires": identity.expires,
            "ping": self.settings.ping_interval,
            **extra,
            **({"hint": hint} if hint else {}),
        }
        self.send(reply_bytes(cmd_id, reply))
        self._schedule_ping()
        # The personal channel (SWITCHBOARD_PERSONAL_CHANNEL_NAMESPACE): a server-side subscription,
        # told with a ``sub`` push after the connect reply, as the server API's subscribe is.
        personal = personal_channel(self.settings.personal_channel_namespace, identity.user_id)
        if personal is not None:
            try:
                await self.session.server_subscribe(personal)
            except BrokerUnavailable:
                log.warning("personal channel not subscribed at connect: the broker is unavailable")
        return True

    async def _identity(self, token: object) -> Identity:
        anonymous = self.session.identity if self.settings.allow_anonymous else None
        return await identify(self.session.services.auth, token, anonymous)

    async def refresh(self, token: object) -> int | None:
        """``refresh``: a fresh token for the same user moves the expiry and re-checks every channel."""
        if not isinstance(token, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "token must be a string")
        identity = await self._identity(token)
        if identity.user_id != self.session.identity.user_id or not identity.user_id:
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, "the token is for another user")
        if self._refresh is not None:  # a token now: it expires as tokens do, not by the backend
            self._refresh.stop()
            self._refresh = None
        await self.session.refresh(identity)
        return identity.expires

    def _expired(self) -> None:
        metrics.AUTH_FAILURES.labels("expired").inc()
        self.conn.close(CloseCode.TOKEN_EXPIRED)

    # -- keepalive --------------------------------------------------------------------------------

    def _send_ping(self) -> None:
        self.send(PING_PUSH)

    def _no_pong(self) -> None:
        self.conn.close(CloseCode.HEARTBEAT_TIMEOUT)

    # -- commands ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        if not await self.connect():
            return
        while (text := await self.conn.receive_text()) is not None:
            frame = parse_frame(text)
            if frame is None:
                self.send(error_bytes(None, ErrorCode.BAD_REQUEST, "expected a JSON object"))
                continue
            op = frame.get("op")
            if op == "pong":
                self._awaiting_pong = False
                continue
            cmd_id = command_id(frame)
            if cmd_id is None:
                self.send(error_bytes(None, ErrorCode.BAD_REQUEST, "id must be a positive integer"))
            elif cmd_id in self._in_flight:
                self.send(error_bytes(cmd_id, ErrorCode.BAD_REQUEST, "duplicate id: that command is in flight"))
            elif op == "connect":
                self.send(error_bytes(cmd_id, ErrorCode.BAD_REQUEST, "already connected"))
            elif not isinstance(op, str) or (op not in COMMANDS and op != "refresh"):
                self.send(error_bytes(cmd_id, ErrorCode.UNKNOWN_OP, "unknown op"))
            else:
                self._schedule(cmd_id, op, frame, text)
            frame = None  # not held by the reader while it waits below
            while self._load.full:
                await asyncio.wait(self._in_flight.values(), return_when=asyncio.FIRST_COMPLETED)

    def _schedule(self, cmd_id: int, op: str, frame: dict[str, Any], text: str) -> None:
        """Run now, or keep the text (not the parsed frame) until the command before it is done."""
        previous = self._last
        waits = previous is not None and not previous.done()
        size = sys.getsizeof(text)  # what the text holds in memory, not its length in characters
        self._load.add(size)
        turn = self._last = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._run(cmd_id, op, text if waits else frame, previous, turn, size))
        self._in_flight[cmd_id] = task

    async def _run(
        self,
        cmd_id: int,
        op: str,
        frame: dict[str, Any] | str,
        previous: asyncio.Future[None] | None,
        turn: asyncio.Future[None],
        size: int,
    ) -> None:
        def next_turn() -> None:
            if not turn.done():
                turn.set_result(None)

        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])  # in order; never raises for the previous one
            if isinstance(frame, str):
                parsed = parse_frame(frame)
                assert parsed is not None  # it parsed when it was read
                frame = parsed
            try:
                run = self._traced if tracing.ON else self._command
                result = await run(op, cmd_id, frame, next_turn)
            except Exception as exc:
                if (error := command_error(cmd_id, op, exc)) is not None:
                    self.send(error)
                if isinstance(exc, BackendDisconnect):
                    self.conn.close(exc.close_code, exc.reason)
            else:
                if result is not None:
                    self.send(reply_bytes(cmd_id, result) if isinstance(result, dict) else result)
        finally:
            next_turn()
            del self._in_flight[cmd_id]
            self._load.done(size)

    async def _command(self, op: str, cmd_id: int, frame: dict[str, Any], next_turn: Callable[[], None]) -> Reply:
        if op == "refresh":
            return {"expires": await self.refresh(frame.get("token"))}
        if op == "subscribe":
            return await subscribe(self.session, cmd_id, frame, registered=next_turn)
        return await COMMANDS[op](self.session, cmd_id, frame)

    async def _traced(self, op: str, cmd_id: int, frame: dict[str, Any], next_turn: Callable[[], None]) -> Reply:
        """``_command`` in a ``ws <op>`` span: op is one of COMMANDS or refresh, a bounded name."""
        channel = frame.get("channel")
        attributes = {"switchboard.client": self.session.client}
        if isinstance(channel, str):
            attributes["messaging.destination.name"] = channel
        with tracing.span(f"ws {op}", attributes=attributes):
            return await self._command(op, cmd_id, frame, next_turn)

    def _limited(self, text: str | bytes) -> None:
        frame = parse_frame(text) if isinstance(text, str) else None  # /ws reads text frames only
        cmd_id = command_id(frame) if frame is not None else None
        if cmd_id is not None:
            self.send(error_bytes(cmd_id, ErrorCode.TOO_MANY_REQUESTS, "rate limit exceeded"))

    async def close(self) -> None:
        self._stop_pings()
        if self._refresh is not None:
            self._refresh.stop()
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


async def endpoint(websocket: WebSocket) -> None:
    # Read before the handshake drops the request headers (app/protocols/handshake.py).
    authorization = any(name == b"authorization" for name, _ in websocket.scope["headers"])

    async def handler(session: Session) -> None:
        client = WsClient(session, authorization)
        try:
            await client.serve()
        finally:
            await client.close()

    await run_session(websocket, "ws", handler, ws=True)


routes = [WebSocketRoute("/ws", endpoint)]
