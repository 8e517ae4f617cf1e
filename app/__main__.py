"""``python -m app``: run one instance with uvicorn. CLI flags override SWITCHBOARD_* variables."""

from __future__ import annotations

import argparse
import sys

import uvicorn
from pydantic import ValidationError

from app.config import Settings, settings_error_line
from app.logs import log_config
from app.main import create_app

# Measured fastest for pre-encoded fan-out (docs/benchmarks.md): no asyncio streams layer.
WS_IMPLEMENTATION = "websockets-sansio"


def parse_args(argv: list[str] | None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", help="bind address (SWITCHBOARD_HOST)")
    parser.add_argument("--port", type=int, help="bind port (SWITCHBOARD_PORT)")
    parser.add_argument("--broker-url", help="memory:// or redis://host:port/db (SWITCHBOARD_BROKER_URL)")
    parser.add_argument("--log-level", help="debug, info, warning (SWITCHBOARD_LOG_LEVEL)")
    parser.add_argument("--dev", action="store_true", default=None, help="dev mode (SWITCHBOARD_DEV_MODE)")
    args = vars(parser.parse_args(argv))
    overrides = {k: v for k, v in args.items() if v is not None}
    if "dev" in overrides:
        overrides["dev_mode"] = overrides.pop("dev")
    return overrides


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """Server options shared with gunicorn's worker class."""
    return {
        "loop": "uvloop",
        "http": "httptools",
        "ws": WS_IMPLEMENTATION,
        # The protocol layer enforces the size limit with 1009 before the app sees the frame.
        "ws_max_size": settings.max_message_bytes,
        # Deflate runs per socket: it would undo encode-once fan-out.
        "ws_per_message_deflate": False,
        "log_config": log_config(settings.log_level),
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": 10,
    }


def main(argv: list[str] | None = None) -> None:
    try:
        settings = Settings(**parse_args(argv))  # type: ignore[arg-type]
    except ValidationError as exc:
        print(f"switchboard: {settings_error_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **uvicorn_options(settings))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
