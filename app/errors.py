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
    HEARTBEAT_TIMEOUT = 4001


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
}

# Reasons for the POLICY_VIOLATION code, which covers several causes.
AUTH_FAILED = "Authentication failed"
AUTH_TIMEOUT = "Authentication timeout"
RATE_LIMITED = "Rate limit exceeded"
ORIGIN_REFUSED = "Origin not allowed"
INVALID_RESUME = "Invalid since/epoch: give both, an offset >= 0 and the epoch it came with"


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
PUBLISH_FAILED = "Broker unavailable: message not delivered"
