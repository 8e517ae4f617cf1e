"""Logging config shared by ``python -m app`` and gunicorn, with secrets redacted.

uvicorn logs every WebSocket handshake with its full query string, and tokens travel there
(``/ws/secure?token=...``). The filter rewrites such values before any handler formats them.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

_SECRET_PARAM = re.compile(r"\b((?:access_)?token|jwt|password|secret|api_key)=[^&\s\"']*", re.IGNORECASE)
REDACTED = "[redacted]"
# Loggers that print request lines; filters on a logger see only records logged to it directly.
REQUEST_LOGGERS = ("uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")


def redact(text: str) -> str:
    return _SECRET_PARAM.sub(rf"\1={REDACTED}", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            # uvicorn's access formatter unpacks args positionally: keep the tuple's shape.
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
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
