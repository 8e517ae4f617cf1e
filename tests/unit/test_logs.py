from __future__ import annotations

import logging
import sys

import pytest

from app.logs import REDACTED, TRACEBACK_INDENT, RedactSecrets, redact


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1:5 - "WebSocket /ws/secure?token=eyJhbGciOi.abc.def" [accepted]',
        "GET /x?a=1&access_token=eyJabc&b=2",
        "/ws?JWT=eyJabc",
    ],
)
def test_redact_removes_token_values(line: str) -> None:
    out = redact(line)
    assert "eyJ" not in out
    assert REDACTED in out


def test_filter_keeps_access_log_args_positional() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/ws/secure?token=secret-value", "1.1", 101),
        None,
    )
    RedactSecrets().filter(record)
    assert isinstance(record.args, tuple)
    assert "secret-value" not in record.getMessage()
    assert record.getMessage().startswith("1.2.3.4:5")


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "line",
    [
        f"/ws/secure?%74oken={JWT}",  # a percent-encoded name reaches the app as `token`
        f"/ws/secure?TOKEN={JWT}",
        f"/ws/secure?to%6Ben={JWT}",
        f"/ws/secure?%2574oken={JWT}",  # encoded twice
        f"/ws/room/x?since=1&whatever={JWT}",  # a JWT under any name
        "/ws/room/x?t=%65%79%4A" + JWT[3:],  # a JWT spelled in percent-escapes
        f"no query at all, just {JWT} in a message",
    ],
)
def test_every_spelling_of_a_token_is_redacted(line: str) -> None:
    out = redact(line)
    assert "c2lnbmF0dXJl" not in out  # the signature
    assert REDACTED in out


def test_ordinary_parameters_are_kept() -> None:
    assert redact("/ws/room/x?since=12&epoch=ab12&username=ann") == "/ws/room/x?since=12&epoch=ab12&username=ann"


def test_trace_records_with_scopes_and_bytes_are_redacted() -> None:
    scope = {"type": "websocket", "path": "/ws/secure", "query_string": f"token={JWT}".encode()}
    record = logging.LogRecord("uvicorn.error", 5, __file__, 1, "%sASGI [%d] Started scope=%s", ("", 1, scope), None)
    RedactSecrets().filter(record)
    message = record.getMessage()
    assert "c2lnbmF0dXJl" not in message
    assert "ASGI [1] Started" in message


def test_client_text_cannot_start_a_log_line_of_its_own() -> None:
    """Issue 21 finding 4: a JWT header's text reached the log raw and forged a request line."""
    forged = 'x\nINFO:     127.0.0.1:1 - "POST /api/v1/disconnect HTTP/1.1" 200 OK\u2028\r'
    try:
        raise ValueError(f"Unsupported critical extension: {forged}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("switchboard.ws", logging.ERROR, __file__, 1, "op %s: %r", (forged, forged), exc_info)
    RedactSecrets().filter(record)
    text = logging.Formatter().format(record)
    first, *rest = text.splitlines()
    assert first.startswith("op x\\nINFO:")
    assert rest  # the traceback
    assert all(line.startswith(TRACEBACK_INDENT) for line in rest)
    assert not any(line.startswith("INFO:") for line in text.splitlines())
