"""Logging config shared by ``python -m app`` and gunicorn, with secrets redacted.

uvicorn logs every WebSocket handshake with its full query string, and tokens travel there
(``/ws/secure?token=...``). The filter rewrites such values before any handler formats them, at
every level (uvicorn's ``trace`` logs whole ASGI scopes), in any spelling of the parameter's name
(percent-encoded, upper-case), and wherever something that looks like a JWT appears.
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
    if isinstance(arg, str):
        return redact(arg)
    if isinstance(arg, bytes | bytearray | dict | list | tuple):
        # uvicorn's trace level logs ASGI scopes and messages (query strings as bytes): format
        # them as %s would, then redact. Numbers keep their type for %d.
        return redact(str(arg))
    return arg


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            # uvicorn's access formatter unpacks args positionally: keep the tuple's shape.
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
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
