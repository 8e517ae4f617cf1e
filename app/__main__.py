"""``python -m app``: run one instance with uvicorn. CLI flags override SWITCHBOARD_* variables."""

from __future__ import annotations

import argparse

import uvicorn

from app.launch import load_settings
from app.logs import log_config
from app.main import create_app
from app.server import DrainingServer, server_options


def parse_args(argv: list[str] | None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", help="bind address (SWITCHBOARD_HOST)")
    parser.add_argument("--port", type=int, help="bind port (SWITCHBOARD_PORT)")
    parser.add_argument(
        "--broker-url", help="memory://, redis://host:port/db or redis+sentinel://... (SWITCHBOARD_BROKER_URL)"
    )
    parser.add_argument("--log-level", help="debug, info, warning (SWITCHBOARD_LOG_LEVEL)")
    parser.add_argument("--dev", action="store_true", default=None, help="dev mode (SWITCHBOARD_DEV_MODE)")
    args = vars(parser.parse_args(argv))
    overrides = {k: v for k, v in args.items() if v is not None}
    if "dev" in overrides:
        overrides["dev_mode"] = overrides.pop("dev")
    return overrides


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(parse_args(argv))
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=log_config(settings.log_level),
        log_level=settings.log_level,
        **server_options(settings),
    )
    DrainingServer(config).run()


if __name__ == "__main__":
    main()
