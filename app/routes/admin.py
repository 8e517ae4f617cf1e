"""The admin web UI at ``/admin`` (SWITCHBOARD_ADMIN=true; docs/admin.md).

Every view and action is a server API method: the page's script posts to ``/admin/api/<method>``,
which checks the admin's session cookie and CSRF token where the server API checks its key, then
runs the very same ``run_method``. So the UI has no data path of its own.

In this order: the session (401 JSON), the CSRF token in ``X-CSRF-Token`` (403 JSON), the method
(404), then the server API's own checks. Actions (methods that change something) are logged with
the admin's name and session id, and counted in ``switchboard_admin_actions_total``.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.admin_auth import COOKIE, NAME, AdminKeys, AdminSession, SignInLimiter
from app.api_methods import METHODS, ApiError
from app.errors import ErrorCode
from app.routes.server_api import read_body, run_method
from app.services import services

log = logging.getLogger("switchboard.admin")

ASSETS = Path(__file__).resolve().parent.parent / "static" / "admin"
# Methods that change something: logged and counted. The rest only read.
ACTIONS = frozenset(metrics.ADMIN_ACTION_METHODS)
SIGN_IN_BYTES = 4096
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecureHeaders:
    """The strict CSP and friends on every ``/admin`` response (pages, assets, JSON, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/admin"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def build_router(keys: AdminKeys, limiter: SignInLimiter) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def session_of(request: Request) -> AdminSession | None:
        return keys.verify(request.cookies.get(COOKIE))

    templates = {name: (ASSETS / name).read_text() for name in ("index.html", "signin.html")}

    def page(template: str, status: int = 200, **fields: str) -> HTMLResponse:
        text = templates[template]
        for key, value in fields.items():  # escaped: a name is restricted, but never trusted
            text = text.replace("{{" + key + "}}", html.escape(value))
        return HTMLResponse(text, status_code=status)

    @router.get("/admin")
    async def home(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return page("signin.html", error="")
        return page("index.html", name=session.name, csrf=keys.csrf(session))

    @router.post("/admin/signin")
    async def sign_in(request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(address)
        if wait:
            metrics.ADMIN_SIGN_INS.labels("limited").inc()
            message = f"Too many failed sign-ins: try again in {int(wait) + 1} s."
            refused = page("signin.html", 429, error=message)
            refused.headers["Retry-After"] = str(int(wait) + 1)
            return refused
        form = parse_qs((await read_raw(request)).decode(errors="replace"))
        name = (form.get("name") or [""])[0]
        password = (form.get("password") or [""])[0]
        if not NAME.fullmatch(name) or not keys.password_ok(password):
            limiter.failed(address)
            metrics.ADMIN_SIGN_INS.labels("refused").inc()
            log.warning("admin sign-in refused from %s", address)
            return page("signin.html", 401, error="Wrong name or password.")
        limiter.succeeded(address)
        session, cookie = keys.issue(name)
        metrics.ADMIN_SIGN_INS.labels("ok").inc()
        log.info("admin %s signed in from %s (session %s)", name, address, session.sid)
        done = RedirectResponse("/admin", status_code=303)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        done.set_cookie(
            COOKIE, cookie, max_age=int(keys.ttl), path="/admin", httponly=True, samesite="strict", secure=secure
        )
        return done

    @router.post("/admin/signout")
    async def sign_out(request: Request) -> Response:
        session = signed_in(request)
        form = parse_qs((await read_raw(request)).decode(errors="replace"))
        if not keys.csrf_ok(session, (form.get("csrf") or [""])[0]):
            raise ApiError(403, ErrorCode.PERMISSION_DENIED, "missing or wrong CSRF token")
        log.info("admin %s signed out (session %s)", session.name, session.sid)
        done = RedirectResponse("/admin", status_code=303)
        done.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="strict")
        return done

    def signed_in(request: Request) -> AdminSession:
        session = session_of(request)
        if session is None:
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "not signed in to the admin UI (or the session expired)")
        return session

    @router.post("/admin/api/{method}")
    async def api(method: str, request: Request) -> Response:
        session = signed_in(request)
        if not keys.csrf_ok(session, request.headers.get("x-csrf-token")):
            raise ApiError(403, ErrorCode.PERMISSION_DENIED, "missing or wrong CSRF token (X-CSRF-Token)")
        if method not in METHODS:
            raise ApiError(404, ErrorCode.UNKNOWN_OP, f"no method {method[:64]!r}")
        s = services(request)
        raw = await read_body(request, s)
        if method not in ACTIONS:
            return await run_method(method, raw, s)
        target = {k: raw[k] for k in ("channel", "channels", "user") if k in raw}
        try:
            done = await run_method(method, raw, s)
        except ApiError as exc:
            metrics.ADMIN_ACTIONS.labels(method, "error").inc()
            who = f"admin {session.name} (session {session.sid})"
            log.warning("%s: %s %r refused: %s", who, method, target, exc.message)
            raise
        metrics.ADMIN_ACTIONS.labels(method, "ok").inc()
        log.info("admin %s (session %s): %s %r", session.name, session.sid, method, target)
        return done

    return router


async def read_raw(request: Request) -> bytes:
    """A sign-in form's body, capped (it is read before anyone is signed in)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > SIGN_IN_BYTES):
        raise ApiError(413, ErrorCode.LIMIT_EXCEEDED, f"body over {SIGN_IN_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > SIGN_IN_BYTES:
            raise ApiError(413, ErrorCode.LIMIT_EXCEEDED, f"body over {SIGN_IN_BYTES} bytes")
    return bytes(body)


def static_files() -> StaticFiles:
    """``/admin/static``: the script and stylesheet (the pages are templates, served above)."""
    return StaticFiles(directory=ASSETS / "assets")
