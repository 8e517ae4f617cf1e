"""Every close code and error frame Switchboard sends: the one place to look them up.

The README's close-code table is generated from ``CLOSE_REASONS``; change both together.
"""

from __future__ import annotations

from enum import IntEnum

import orjson


class CloseCode(IntEnum):
    NORMAL = 1000
    # RFC 6455: the endpoint received data of a type it cannot accept (binary on a text endpoint).
    UNSUPPORTED_DATA = 1003
    # Auth failures, auth timeout, rate-limit abuse, disallowed Origin.
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    # Draining for a restart or deploy: reconnect (to another instance) after a short jittered delay.
    SERVICE_RESTART = 1012
    # The broker is unreachable, so the channel cannot be joined right now: retry later.
    TRY_AGAIN_LATER = 1013
    # Private range (4000-4999): Switchboard-specific.
    SLOW_CONSUMER = 4000
    # No pong in time: /ws/with-heartbeat's {"type":"pong"}, or /ws's {"op":"pong"}.
    HEARTBEAT_TIMEOUT = 4001
    # /ws: the connection token expired and no `refresh` came within the grace period.
    TOKEN_EXPIRED = 4002
    # The server API disconnected this user (its `disconnect` may name another 4xxx code).
    DISCONNECTED = 4003
    # This user already holds SWITCHBOARD_USER_CONNECTION_LIMIT connections across the cluster.
    USER_LIMIT = 4004


CLOSE_REASONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "Closed by request",
    CloseCode.UNSUPPORTED_DATA: "Binary frames are not supported",
    CloseCode.POLICY_VIOLATION: "Policy violation",
    CloseCode.MESSAGE_TOO_BIG: "Message too big",
    CloseCode.INTERNAL_ERROR: "Internal error",
    CloseCode.SERVICE_RESTART: "Server restarting, reconnect",
    CloseCode.TRY_AGAIN_LATER: "Broker unavailable, try again later",
    CloseCode.SLOW_CONSUMER: "Slow consumer: send queue full",
    CloseCode.HEARTBEAT_TIMEOUT: "Heartbeat timeout: no pong received",
    CloseCode.TOKEN_EXPIRED: "Token expired",
    CloseCode.DISCONNECTED: "Disconnected by the server",
    CloseCode.USER_LIMIT: "Too many connections for this user",
}

# Reasons for the POLICY_VIOLATION code, which covers several causes.
AUTH_FAILED = "Authentication failed"
AUTH_TIMEOUT = "Authentication timeout"
RATE_LIMITED = "Rate limit exceeded"
ORIGIN_REFUSED = "Origin not allowed"
INVALID_RESUME = "Invalid since/epoch: give both, an offset >= 0 and the epoch it came with"
# Reason for UNSUPPORTED_DATA (Centrifugo's 3501) on a Protobuf connection (app/protocols/).
PROTOBUF_TEXT_FRAME = "a text frame on a protobuf connection"
# Reason for TRY_AGAIN_LATER when the connect proxy failed (error 113), not the broker.
BACKEND_UNAVAILABLE = "Backend unavailable, try again later"
# The tutorial endpoints' close (1008) when the connection's token expires: they cannot refresh.
TOKEN_EXPIRED_REASON = "Token expired"


class ErrorCode(IntEnum):
    """The ``/ws`` protocol's error codes (``{"ok":false,"error":{"code":C,"message":...}}``).

    The server API reuses them in its error bodies. ``ERROR_MESSAGES`` holds the default text.
    """

    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    UNKNOWN_OP = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109
    NOT_SUBSCRIBED = 110
    TOO_MANY_REQUESTS = 111
    # The connection's history byte budget is spent (SWITCHBOARD_HISTORY_BYTES_*): retry later.
    OVER_BUDGET = 112
    # A proxy to the backend (docs/proxies.md) timed out, was busy, answered non-2xx or a malformed
    # body: refused (fail closed), try again later. Switchboard never retries the call itself.
    BACKEND_UNAVAILABLE = 113


ERROR_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INTERNAL: "internal error",
    ErrorCode.UNAUTHORIZED: "unauthorized",
    ErrorCode.UNKNOWN_CHANNEL: "unknown channel",
    ErrorCode.PERMISSION_DENIED: "permission denied",
    ErrorCode.UNKNOWN_OP: "unknown op",
    ErrorCode.ALREADY_SUBSCRIBED: "already subscribed",
    ErrorCode.LIMIT_EXCEEDED: "limit exceeded",
    ErrorCode.BAD_REQUEST: "bad request",
    ErrorCode.NOT_AVAILABLE: "not available",
    ErrorCode.TOKEN_EXPIRED: "token expired",
    ErrorCode.NOT_SUBSCRIBED: "not subscribed",
    ErrorCode.TOO_MANY_REQUESTS: "too many requests",
    ErrorCode.OVER_BUDGET: "history byte budget spent",
    ErrorCode.BACKEND_UNAVAILABLE: "backend unavailable",
}

# A backend's own error codes (a proxy's {"error":{"code":C,...}}) are passed to the client in this
# range, as Centrifugo's proxies do; any other code from a backend is a malformed answer.
BACKEND_ERROR_CODES = range(400, 2000)


class UnsubCode(IntEnum):
    """The ``code`` of an ``unsub`` push: why the server ended a subscription the client made."""

    # The server API unsubscribed this user's connections.
    SERVER = 2000
    # A ``refresh`` took a token (or a hook now says) that no longer allows this channel.
    REVOKED = 2001
    # Centrifugo's "subscription expired": its subscription token's ``exp`` passed without a
    # ``sub_refresh`` (/connection/websocket); the SDKs subscribe again with a new token.
    EXPIRED = 2501


class ProtocolError(Exception):
    """A command failed: the client gets this code and message, and the socket stays open."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        self.code = code
        self.message = message or ERROR_MESSAGES[code]
        super().__init__(self.message)

    @property
    def wire_code(self) -> int:
        """The code the ``/ws`` client is sent: ``code``, or a backend's own (app/proxy_calls.py)."""
        return int(self.code)


def reason_for(code: CloseCode) -> str:
    return CLOSE_REASONS[code]


def error_frame(message: str, **extra: object) -> bytes:
    """``{"type":"error","message":...}``: the tutorial's error shape, extra fields appended."""
    return orjson.dumps({"type": "error", "message": message, **extra})


# Error frame messages, named so tests and docs quote the same text.
INVALID_JSON = "Invalid JSON"
NOT_AN_OBJECT = "Expected a JSON object"
MISSING_CONTENT = "Field 'content' is required"
UNKNOWN_TYPE = "Unknown message type"
AUTH_REQUIRED = "Auth required"
INVALID_TOKEN = "Invalid token"
# A publish the broker did not confirm: it may have been stored and delivered, or not (a reply
# lost in a Redis stall). Sent with "outcome":"unknown"; retrying with an idempotency key is safe.
PUBLISH_FAILED = "Broker unavailable: the message may or may not have been delivered"
PERMISSION_DENIED = "Permission denied"
# A publish whose broker reply never came may have been stored and delivered, or not.
OUTCOME_UNKNOWN = (
    "broker unavailable: the publication may or may not have been stored; "
    "retrying with the same idempotency_key is safe"
)
TOO_DEEP = "Message nested too deeply to encode"
INVALID_CHANNEL = "Invalid channel name"
# Error 102 (HTTP 422; close 1008 on the tutorial endpoints) for a name in a namespace Switchboard
# keeps for its own channels and keys, in any spelling (app/reserved.py).
RESERVED_CHANNEL = "Reserved channel name: the switchboard and sb namespaces are Switchboard's own"


# -- /connection/websocket: Centrifugo's client protocol (app/protocols/centrifuge.py) ------------


class CentrifugeError(IntEnum):
    """Centrifugo's client error codes, as its SDKs know them (docs/sdks.md)."""

    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109
    EXPIRED = 110
    TOO_MANY_REQUESTS = 111
    UNRECOVERABLE_POSITION = 112


# A Switchboard error as a Centrifugo SDK is told it. Most codes are the same; "not subscribed"
# (110 here) is permission denied there, and a spent history budget (112 here) is a rate limit.
CENTRIFUGE_ERRORS: dict[ErrorCode, CentrifugeError] = {
    ErrorCode.INTERNAL: CentrifugeError.INTERNAL,
    ErrorCode.UNAUTHORIZED: CentrifugeError.UNAUTHORIZED,
    ErrorCode.UNKNOWN_CHANNEL: CentrifugeError.UNKNOWN_CHANNEL,
    ErrorCode.PERMISSION_DENIED: CentrifugeError.PERMISSION_DENIED,
    ErrorCode.UNKNOWN_OP: CentrifugeError.METHOD_NOT_FOUND,
    ErrorCode.ALREADY_SUBSCRIBED: CentrifugeError.ALREADY_SUBSCRIBED,
    ErrorCode.LIMIT_EXCEEDED: CentrifugeError.LIMIT_EXCEEDED,
    ErrorCode.BAD_REQUEST: CentrifugeError.BAD_REQUEST,
    ErrorCode.NOT_AVAILABLE: CentrifugeError.NOT_AVAILABLE,
    ErrorCode.TOKEN_EXPIRED: CentrifugeError.TOKEN_EXPIRED,
    ErrorCode.NOT_SUBSCRIBED: CentrifugeError.PERMISSION_DENIED,
    ErrorCode.TOO_MANY_REQUESTS: CentrifugeError.TOO_MANY_REQUESTS,
    ErrorCode.OVER_BUDGET: CentrifugeError.TOO_MANY_REQUESTS,
    # A proxy that failed: temporary, so the SDKs retry.
    ErrorCode.BACKEND_UNAVAILABLE: CentrifugeError.NOT_AVAILABLE,
}
# Errors an SDK may retry: it does for these (Centrifugo's "temporary").
CENTRIFUGE_TEMPORARY = frozenset({CentrifugeError.INTERNAL, CentrifugeError.NOT_AVAILABLE})


# ``POST /emulation`` (Centrifugo's bidirectional emulation: app/protocols/emulation.py) answers
# 204 once the commands were handed to their session; else one of these, with its HTTP status, as
# ``{"error":{"code":C,"message":M}}``. A 404 or 5xx makes the SDK drop its stream and reconnect.
EMULATION_MALFORMED = "an emulation request is a JSON object {session, node, data} with data a string"
EMULATION_TOO_BIG = "emulation request over SWITCHBOARD_MAX_MESSAGE_BYTES"
EMULATION_UNKNOWN_SESSION = "unknown session: it has ended, or no live instance holds it"
EMULATION_BUSY = "this session has too many commands in flight: retry"
EMULATION_UNAVAILABLE = "broker unavailable: the session's instance cannot be reached"
EMULATION_RELAYS_FULL = "too many emulation requests waiting for other instances here: retry"
EMULATION_ERRORS: dict[str, tuple[int, CentrifugeError]] = {
    EMULATION_MALFORMED: (400, CentrifugeError.BAD_REQUEST),
    EMULATION_TOO_BIG: (413, CentrifugeError.LIMIT_EXCEEDED),
    EMULATION_UNKNOWN_SESSION: (404, CentrifugeError.BAD_REQUEST),
    EMULATION_BUSY: (429, CentrifugeError.TOO_MANY_REQUESTS),
    EMULATION_UNAVAILABLE: (503, CentrifugeError.NOT_AVAILABLE),
    EMULATION_RELAYS_FULL: (503, CentrifugeError.NOT_AVAILABLE),
}


class CentrifugeDisconnect(IntEnum):
    """Centrifugo's disconnect codes, sent in the close frame. Its SDKs reconnect after
    3000-3499 and 4000-4499, and stay disconnected after 3500-3999 and 4500-4999."""

    SHUTDOWN = 3001
    SERVER_ERROR = 3004
    EXPIRED = 3005
    SLOW = 3008
    INSUFFICIENT_STATE = 3010
    NO_PONG = 3012
    TOO_MANY_REQUESTS = 3013
    INVALID_TOKEN = 3500
    BAD_REQUEST = 3501
    FORCE_NO_RECONNECT = 3503
    CONNECTION_LIMIT = 3504


# Each Switchboard close as a Centrifugo SDK sees it. Codes not listed (1000, and a server API
# `disconnect`'s own 4000-4999 code other than the default 4003) go through unchanged.
CENTRIFUGE_CLOSES: dict[int, int] = {
    CloseCode.UNSUPPORTED_DATA: CentrifugeDisconnect.BAD_REQUEST,
    CloseCode.POLICY_VIOLATION: CentrifugeDisconnect.BAD_REQUEST,
    CloseCode.MESSAGE_TOO_BIG: CentrifugeDisconnect.BAD_REQUEST,
    CloseCode.INTERNAL_ERROR: CentrifugeDisconnect.SERVER_ERROR,
    CloseCode.SERVICE_RESTART: CentrifugeDisconnect.SHUTDOWN,
    CloseCode.TRY_AGAIN_LATER: CentrifugeDisconnect.SERVER_ERROR,
    CloseCode.SLOW_CONSUMER: CentrifugeDisconnect.SLOW,
    CloseCode.HEARTBEAT_TIMEOUT: CentrifugeDisconnect.NO_PONG,
    CloseCode.TOKEN_EXPIRED: CentrifugeDisconnect.EXPIRED,
    CloseCode.DISCONNECTED: CentrifugeDisconnect.FORCE_NO_RECONNECT,
    CloseCode.USER_LIMIT: CentrifugeDisconnect.CONNECTION_LIMIT,
}
