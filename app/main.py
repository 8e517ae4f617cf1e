"""``create_app(settings)``: the FastAPI application. Importing this module starts nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Match, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from app import __version__, drain, gc_tuning, metrics, tracing
from app.admin_auth import AdminKeys, SignInLimiter
from app.api_methods import ApiError
from app.config import Settings
from app.fd_limit import raise_open_files_limit
from app.logs import install_redaction
from app.protocols import centrifuge, centrifuge_streams, emulation, switchboard
from app.routes import admin, api, api_centrifugo, health, seed, server_api
from app.services import Services
from app.startup_log import announce_api_key, log_readiness
from app.streams import commands
from app.streams import endpoint as streams

log = logging.getLogger("switchboard")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Switchboard(FastAPI):
    """FastAPI, with WebSocket scopes sent straight to their endpoint.

    The same holds for the one-way streams (``/sse``, ``/stream``: app/streams/), which set their
    own CORS header. The middleware stack (server errors, CORS, exception handlers) and Starlette's routing layers
    do nothing for a WebSocket whose session handles its own errors, yet each layer's coroutine
    frame stays suspended for the socket's whole life: about 3 KB per idle connection. So the
    endpoint is called here, with the path parameters its route matched; a path no WebSocket
    route matches goes to the router, which closes it as before.
    """

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        router = self.router
        # Span names come from the routes, never from a request path as sent (bounded names).
        api_paths = _api_paths(router.routes)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "websocket":
                path = scope.get("path", "")
                if scope["type"] == "http" and path in streams.WIRES:
                    # The one-way streams live as long as a socket does: past the middleware too.
                    await streams.endpoint(scope, receive, send)
                elif scope["type"] == "http" and path in centrifuge_streams.ROUTES and scope["method"] != "OPTIONS":
                    # Centrifugo's emulated transports likewise; a CORS preflight goes to the stack.
                    await centrifuge_streams.endpoint(scope, receive, send)
                elif scope["type"] == "http" and path == commands.PATH:
                    await commands.endpoint(scope, receive, send)
                elif tracing.ON and scope["type"] == "http" and path.startswith("/api/"):
                    method = scope["method"] if scope["method"] in HTTP_METHODS else "_OTHER"
                    name = f"{method} {path if path in api_paths else '/api/*'}"
                    await tracing.traced_http(stack, name, scope, receive, send)
                else:
                    await stack(scope, receive, send)
                return
            for route in router.routes:
                if isinstance(route, WebSocketRoute):
                    match, child = route.matches(scope)
                    if match is Match.FULL:
                        scope.update(child)
                        await route.endpoint(WebSocket(scope, receive, send))
                        return
            await router(scope, receive, send)

        return app


def _api_paths(routes: Iterable[BaseRoute]) -> frozenset[str]:
    """The fixed ``/api/`` paths of the routes, routers included (FastAPI wraps each included one)."""
    found: set[str] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found |= _api_paths(inner.routes)
        elif isinstance(route, APIRoute) and route.path.startswith("/api/") and "{" not in route.path:
            found.add(route.path)
    return frozenset(found)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_redaction()
        _, open_files = raise_open_files_limit()
        if settings.max_connections > open_files:
            log.warning(
                "SWITCHBOARD_MAX_CONNECTIONS=%d is above the open-files limit (%d): raise nofile",
                settings.max_connections,
                open_files,
            )
        if settings.generated_secret:
            log.warning(
                "dev mode: no SWITCHBOARD_JWT_SECRET set, using a random one for this process; "
                "tokens will not validate on other instances"
            )
        if settings.service_links:
            log.debug("ignoring Kubernetes service links (not settings): %s", ", ".join(settings.service_links))
        if settings.single_process_broker and not settings.dev_mode:
            log.warning(
                "SWITCHBOARD_BROKER_URL is memory://: publications reach this process's clients only; "
                "set a redis:// URL before running a second instance"
            )
        key_file = announce_api_key(settings) if settings.generated_api_key else None
        # Per process (gunicorn forks workers before their lifespans run): the exporter's thread
        # belongs to the worker. OTEL_TRACES_EXPORTER=none leaves it off.
        traced = settings.tracing and tracing.start(settings.instance_id, __version__)
        services = app.state.services = Services.build(settings)
        await services.start()
        metrics_server = None
        if settings.metrics_port:
            metrics_server = await metrics.serve_on_port(settings.host, settings.metrics_port)
        unregister = drain.register(services)
        gc_tuning.tune(settings.gc_threshold)  # last: what start-up made lives for good
        services.spawn("ready-log", log_readiness(services))
        if settings.outbox_url is not None:
            from app.outbox.relay import Relay  # psycopg is imported only by instances that relay

            services.spawn("outbox", Relay(services).run())
        try:
            yield
        finally:
            unregister()
            if metrics_server is not None:
                metrics_server.close()
                await metrics_server.wait_closed()
            await services.close()
            if traced:
                await asyncio.to_thread(tracing.stop)  # flushes the spans still queued
            if key_file is not None:
                key_file.unlink(missing_ok=True)
                key_file.parent.rmdir()

    docs = settings.docs_enabled
    app = Switchboard(
        title="Switchboard",
        version=__version__,
        description="Real-time fan-out over WebSockets. The server API needs a key from SWITCHBOARD_API_KEYS.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        redoc_url=None,
    )
    app.add_exception_handler(ApiError, server_api.api_error_handler)
    app.router.routes.extend([*switchboard.routes, *seed.routes, *centrifuge.routes, *emulation.routes])
    app.mount("/static", StaticFiles(directory=api.STATIC), name="static")
    # Browser pages on another allowed origin (a second instance, say) may call /api/*.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "X-API-Key"],
    )
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(server_api.router)
    app.include_router(api_centrifugo.router)
    if settings.dev_mode:
        app.include_router(api.dev_router)
    if settings.admin:  # off by default: then /admin is a 404 like any unknown path
        keys = AdminKeys(settings.admin_password.get_secret_value(), settings.admin_session_ttl)
        app.include_router(admin.build_router(keys, SignInLimiter()))
        app.mount("/admin/static", admin.static_files(), name="admin-static")
        app.add_middleware(admin.SecureHeaders)
    return app
