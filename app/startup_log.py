"""What start-up tells the operator: only what is true, and never a secret in a log.

* Readiness: "started; waiting for Redis" while the broker is not connected (``/readyz`` answers
  503 then), and "ready" once it is, never "ready" before.
* The dev-mode server API key: shown on the terminal when stderr is one; otherwise (``make run >
  log``, a supervisor, a container) written to a file only this user can read, and its path logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from app.config import Settings
from app.services import Services

log = logging.getLogger("switchboard")

# How often readiness is looked at while Redis is not there yet (one attribute read each time).
READY_POLL_SECONDS = 0.2


def broker_location(settings: Settings) -> str:
    return settings.broker_url.split("@")[-1]  # never the password


def log_readiness(services: Services) -> Coroutine[Any, Any, None]:
    async def watch() -> None:
        settings = services.settings
        if not services.broker.healthy():
            log.warning(
                "instance %s started; waiting for Redis at %s (/readyz answers 503 until it is reached)",
                settings.instance_id,
                broker_location(settings),
            )
            # Brokers offer healthy(), not an event (three kinds); until the first connection only.
            while not services.broker.healthy():  # noqa: ASYNC110
                await asyncio.sleep(READY_POLL_SECONDS)
        log.info("instance %s ready on %s", settings.instance_id, broker_location(settings))

    return watch()


def announce_api_key(settings: Settings) -> Path | None:
    """Show the generated key without writing it into a log; returns a file to delete at exit."""
    key = settings.api_keys[0].get_secret_value()
    if sys.stderr.isatty():
        # A terminal is not kept or shipped as log lines are.
        print(f"switchboard: dev mode: server API key for this process: {key}", file=sys.stderr, flush=True)
        return None
    directory = Path(tempfile.mkdtemp(prefix="switchboard-"))  # 0700, a fresh name
    path = directory / "api-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key)
    log.warning("dev mode: the server API key for this process is in %s (readable by this user only)", path)
    return path
