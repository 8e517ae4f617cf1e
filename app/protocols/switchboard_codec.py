"""``/ws`` frames in and error replies out: the command id, the JSON object a frame must be, the
error replies (counted by code), a token's identity or its error, and the hint a connect gets for
what it sent that nothing reads.
The protocol's scheduling and state are in app/protocols/switchboard.py.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from app import metrics
from app.auth import Authenticator, AuthError, Identity
from app.broker import BrokerUnavailable
from app.connection import ConnectionGone
from app.errors import OUTCOME_UNKNOWN, ErrorCode, ProtocolError

log = logging.getLogger("switchboard.ws")

KNOWN_ERRORS = frozenset(int(code) for code in ErrorCode)
# What `connect` reads; anything else is ignored, and the reply's `hint` says so (a token sent as
# "jwt" would otherwise connect silently as anonymous).
CONNECT_FIELDS = frozenset({"id", "op", "token"})
HEADER_HINT = 'the Authorization header is not read on /ws: send the token in connect\'s "token" field'
# The most ignored field names a hint or a log line repeats, and how much of each.
HINT_FIELDS = 5
HINT_FIELD_CHARS = 32


def error_bytes(cmd_id: object, code: int, message: str, **extra: str) -> bytes:
    # A backend's own codes (app/proxy.py) share one label: metric labels come from fixed sets.
    metrics.COMMAND_ERRORS.labels(str(int(code)) if code in KNOWN_ERRORS else "backend").inc()
    return orjson.dumps({"id": cmd_id, "ok": False, "error": {"code": int(code), "message": message, **extra}})


def command_id(frame: dict[str, Any]) -> int | None:
    value = frame.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**53:
        return value
    return None


def command_error(cmd_id: int, op: str, exc: Exception) -> bytes | None:
    """The error reply to a command that raised ``exc``; None when nobody is left to answer."""
    if isinstance(exc, ProtocolError):
        return error_bytes(cmd_id, exc.wire_code, exc.message)
    if isinstance(exc, BrokerUnavailable):
        if op == "publish":  # Redis never confirmed it: it may have happened
            return error_bytes(cmd_id, ErrorCode.NOT_AVAILABLE, OUTCOME_UNKNOWN, outcome="unknown")
        return error_bytes(cmd_id, ErrorCode.NOT_AVAILABLE, "broker unavailable: try again")
    if isinstance(exc, ConnectionGone):
        return None  # closed while a replay waited for it
    log.error("/ws command %s failed", op, exc_info=exc)
    return error_bytes(cmd_id, ErrorCode.INTERNAL, "internal error")


def parse_frame(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def identify(auth: Authenticator, token: object, anonymous: Identity | None) -> Identity:
    """A connect's or refresh's token verified, or the ``/ws`` error for it. ``anonymous``: who a
    connect without a token is (None: one is required)."""
    if token is None and anonymous is not None:
        return anonymous
    if not isinstance(token, str):
        metrics.AUTH_FAILURES.labels("missing").inc()
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "token required")
    try:
        return await auth.verify(token)
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(exc.reason).inc()
        if exc.reason == "expired":
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED) from None
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"bad token: {exc.detail}") from None


def connect_hint(frame: dict[str, Any], client: str, *, header: bool, proxied: bool = False) -> str:
    """What this connect sent where nothing reads it (never the values: they may be tokens).
    ``header``: the handshake had an Authorization header. ``proxied``: the connect proxy is
    asked, and is sent ``data`` and the allowlisted headers."""
    hints = []
    if header and not proxied:
        log.debug("connect %s: the handshake's Authorization header is ignored on /ws", client)
        hints.append(HEADER_HINT)
    read = CONNECT_FIELDS | {"data"} if proxied else CONNECT_FIELDS
    ignored = sorted(name[:HINT_FIELD_CHARS] for name in frame if name not in read)[:HINT_FIELDS]
    if ignored:
        # repr() escapes control characters: client text is never logged as is.
        log.debug("connect %s: ignored fields %s", client, ", ".join(map(repr, ignored)))
        hints.append('connect reads only "token"; ignored: ' + ", ".join(ignored))
    return "; ".join(hints)
