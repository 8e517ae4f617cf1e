from __future__ import annotations

import logging

import pytest

from app.logs import REDACTED, RedactSecrets, redact


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
