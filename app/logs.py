"""Logging config shared by ``python -m app`` and gunicorn, with secrets redacted and client text escaped.

uvicorn logs every WebSocket handshake with its full query string, and tokens travel there
(``/ws/secure?token=...``). The filter rewrites such values before any handler formats them, at
every level (uvicorn's ``trace`` logs whole ASGI scopes), in any spelling of the parameter's name
(percent-encoded, upper-case), and wherever something that looks like a JWT appears.

Client text reaches logs in arguments, in request lines, and in exception messages. So the same
filter escapes control characters (``\n`` becomes the two characters ``\\n``) in the message and
every argument, and indents every line of a traceback: no client can start a log line of its own.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from uvicorn.config import LOGGING_CONFIG

REDACTED = "[redacted]"
# Parameter names whose values are secrets, compared after percent-decoding and lower-casing:
# `?%74oken=` and `?TOKEN=` reach the app as `token` too.
SECRET_NAMES = frozenset({"token", "access_token", "jwt", "password", "secret", "api_key", "apikey", "key", "auth"})
_PARAM = re.compile(r"([A-Za-z0-9_.~%+\-]+)=([^&\s\"',;]*)")
# A JWT anywhere (three base64url parts, the first one a JSON object), decoded or not.
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
# Loggers that print request lines; filters on a logger see only records logged to it directly.
REQUEST_LOGGERS = ("uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything a terminal or a
# log shipper may take for the end of a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
TRACEBACK_INDENT = "    "


def escape(text: str) -> str:
    """Control characters as Python escapes: one record stays one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _param(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    decoded = unquote_plus(unquote_plus(name)).lower()
    if decoded in SECRET_NAMES or _JWT.search(unquote_plus(unquote_plus(value))):
        return f"{name}={REDACTED}"
    return match.group(0)


def redact(text: str) -> str:
    """Secret query parameters in any spelling, and anything that looks like a JWT."""
    return _JWT.sub(REDACTED, _PARAM.sub(_param, text))


def _redact_arg(arg: object) -> object:
    if isinstance(arg, int | float | None):
        return arg  # numbers keep their type for %d
    if isinstance(arg, str):
        return escape(redact(arg))
    # uvicorn's trace level logs ASGI scopes and messages (query strings as bytes), and an
    # exception's text may quote a client: format as %s would, then redact and escape.
    return escape(redact(str(arg)))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape(redact(record.msg))
        if isinstance(record.args, tuple):
            # uvicorn's access formatter unpacks args positionally: keep the tuple's shape.
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when it is set: an exception message that quotes a client
            # cannot start a line of its own.
            text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_text = "\n".join(TRACEBACK_INDENT + escape(line) for line in text.splitlines())
        return True


def install_redaction() -> None:
    """Attach the filter to the request loggers and to every root handler; idempotent."""
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in REQUEST_LOGGERS]
    targets += logging.getLogger().handlers
    for target in targets:
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's default logging config plus the redaction filter and our own loggers."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "app.logs.RedactSecrets"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    loggers = config["loggers"]
    loggers["switchboard"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    # gunicorn merges this over its own defaults, whose handlers we replaced: name everything.
    loggers["gunicorn.error"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    loggers["gunicorn.access"] = {"handlers": ["access"], "level": "INFO", "propagate": False}
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    # websockets logs "connection open" per socket at INFO: noise at thousands of connections.
    loggers["websockets"] = {"level": "WARNING"}
    return config
