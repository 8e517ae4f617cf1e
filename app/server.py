"""How Switchboard is served: uvicorn options, a draining Server, and the gunicorn worker.

``python -m app`` and gunicorn (``-k app.server.Worker``) share ``server_options`` so that a
single instance and a production worker behave the same.
"""

from __future__ import annotations

import logging
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn_worker import UvicornWorker

from app import drain
from app.config import Settings, settings_error_line


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol (the fastest here), with one fix.

    After an ASGI denial response (the HTTP 503 a draining instance answers handshakes with),
    uvicorn 0.54 never marks the handshake finished and logs a false "returned without
    completing handshake" error for every refused client. Also quiets a per-socket log line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn hands the websockets state machine its own logger, which then prints
        # "connection open" per socket at INFO; uvicorn already logs each handshake.
        self.conn.logger = logging.getLogger("websockets.server")

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


def server_options(settings: Settings) -> dict[str, Any]:
    return {
        "loop": "uvloop",
        "http": "httptools",
        "ws": WebSocketProtocol,
        # The protocol layer enforces the size limit with 1009 before the app sees the frame.
        "ws_max_size": settings.max_message_bytes,
        # Deflate runs per socket: it would undo encode-once fan-out.
        "ws_per_message_deflate": False,
        # After the drain, stragglers get this long before uvicorn cancels them.
        "timeout_graceful_shutdown": 5,
    }


class DrainingServer(uvicorn.Server):
    """On SIGTERM, drain WebSockets in paced batches before uvicorn's all-at-once shutdown."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        drain.begin_all()  # now, not at the main loop's next tick

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await drain.drain_all()
        await super().shutdown(sockets)


def load_settings() -> Settings:
    """Settings, or exit with a one-line explanation (status 2)."""
    try:
        return Settings()
    except ValidationError as exc:
        print(f"switchboard: {settings_error_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


class Worker(UvicornWorker):
    """gunicorn worker: uvicorn with Switchboard's options and the draining shutdown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.CONFIG_KWARGS = server_options(load_settings())
        super().__init__(*args, **kwargs)

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(3)  # gunicorn's WORKER_BOOT_ERROR: the arbiter stops instead of respawning.
