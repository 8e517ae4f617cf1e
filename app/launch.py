"""What both launchers (``python -m app`` and gunicorn.conf.py) do before serving: read the
settings, or stop with one line on stderr and status 2, never a traceback.

Imported by gunicorn's master before the metrics directory exists: nothing here touches app.metrics.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from pydantic import ValidationError

from app.broker.redis_target import check_sentinel_master
from app.config import Settings, settings_error_line


def fail(line: str) -> NoReturn:
    """Stop start-up with one line on stderr and status 2, never a traceback."""
    print(f"switchboard: {line}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def env_int(name: str, default: int) -> int:
    """A whole-number variable of the process manager's own (WEB_CONCURRENCY, ...)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        fail(f"{name}={value[:32]!r} is not a whole number of at least 1")
    return int(value)


def load_settings(overrides: dict[str, Any] | None = None, *, check_broker: bool = True, workers: int = 1) -> Settings:
    """Settings, or exit with a one-line explanation (status 2). Also asks the Sentinels, if the
    broker URL names some, whether they know its master: a typo there would look like an outage.
    ``workers`` is how many processes will serve (gunicorn's): memory:// reaches only one."""
    try:
        settings = Settings(**(overrides or {}))
        if check_broker:
            check_sentinel_master(settings.broker_url)
    except ValidationError as exc:
        fail(settings_error_line(exc))
    except ValueError as exc:
        fail(f"SWITCHBOARD_BROKER_URL: {exc}")
    if workers > 1 and settings.single_process_broker and not settings.dev_mode:
        fail(
            f"SWITCHBOARD_BROKER_URL is memory://, which reaches the clients of one process only, and "
            f"WEB_CONCURRENCY={workers}: set a redis:// URL, or WEB_CONCURRENCY=1"
        )
    return settings
