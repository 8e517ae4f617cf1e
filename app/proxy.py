"""Calls to the backend's proxy endpoints (docs/proxies.md): one pooled client, bounded, counted.

Every call is an HTTP POST of a JSON body to a URL from configuration, answered with Centrifugo's
envelope: ``{"result":{...}}``, ``{"error":{"code":C,"message":M}}`` or
``{"disconnect":{"code":C,"reason":R}}``. It fails closed: a timeout, a full queue, a refused
connection, a non-2xx status, a body that is not that envelope (or over MAX_ANSWER_BYTES), or a
result the caller's parser rejects, all refuse with error 113 (``ProxyFailed``). Switchboard never
retries a call itself, so a slow or failing backend sees at most one call per client request,
never a retry storm; clients reconnect or retry with their own backoff.

Concurrency toward the backend is bounded per process (``SWITCHBOARD_PROXY_MAX_CONCURRENCY``): a
call waits for a slot up to ``SWITCHBOARD_AUTH_TIMEOUT``, as long as a client may take to connect
("busy" after that; a waiting call costs the backend nothing), then up to
``SWITCHBOARD_PROXY_TIMEOUT`` for the answer. A short queue wait would turn a storm the backend
could serve in a few seconds into refusals, and the clients' retries into a second storm.

Redirects are never followed and proxy variables of the environment are ignored: the URL
configured is the one called.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import orjson

from app import metrics, tracing
from app.config import Settings
from app.errors import BACKEND_ERROR_CODES, ErrorCode, ProtocolError

T = TypeVar("T")
# A backend's answer is a small JSON object; anything larger is refused as malformed.
MAX_ANSWER_BYTES = 1 << 20
DISCONNECT_CODES = range(4000, 5000)
WHY = {
    "timeout": "the backend did not answer in time",
    "busy": "too many calls to the backend in flight",
    "status": "the backend answered with an error status",
    "malformed": "the backend's answer was malformed",
    "unreachable": "the backend is unreachable",
}

log = logging.getLogger("switchboard.proxy")


class ProxyFailed(ProtocolError):
    """No usable answer from the backend: error 113. ``result`` is the metrics label."""

    def __init__(self, kind: str, result: str) -> None:
        super().__init__(ErrorCode.BACKEND_UNAVAILABLE, f"{kind} proxy: {WHY[result]}")
        self.result = result


class Malformed(ValueError):
    """Raised by a result parser: the answer's fields are not what the call expects."""


class BackendError(ProtocolError):
    """The backend refused with its own code (400-1999), which the ``/ws`` client is sent as is.

    ``code`` stays 103 for whatever reads it as a Switchboard code (the tutorial endpoints)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(ErrorCode.PERMISSION_DENIED, message or "refused by the backend")
        self.backend_code = code

    @property
    def wire_code(self) -> int:
        return self.backend_code


class BackendDisconnect(ProtocolError):
    """The backend asked to close the connection with a 4000-4999 code and a reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(ErrorCode.PERMISSION_DENIED, reason or "disconnected by the backend")
        self.close_code = code
        self.reason = reason


def _envelope(answer: object) -> dict[str, Any]:
    """The ``result`` object; raises BackendError, BackendDisconnect, or Malformed."""
    if not isinstance(answer, dict):
        raise Malformed("not a JSON object")
    disconnect, error = answer.get("disconnect"), answer.get("error")
    if disconnect is not None:
        code, reason = _code_and_text(disconnect, "reason", DISCONNECT_CODES)
        raise BackendDisconnect(code, reason)
    if error is not None:
        code, message = _code_and_text(error, "message", BACKEND_ERROR_CODES)
        raise BackendError(code, message)
    result = answer.get("result")
    if not isinstance(result, dict):
        raise Malformed("no result, error or disconnect object")
    return result


def _code_and_text(value: object, text_key: str, codes: range) -> tuple[int, str]:
    if not isinstance(value, dict):
        raise Malformed("error and disconnect must be objects")
    code, text = value.get("code"), value.get(text_key, "")
    if not isinstance(code, int) or isinstance(code, bool) or code not in codes or not isinstance(text, str):
        raise Malformed(f"a code in {codes.start}-{codes.stop - 1} and a string {text_key} are required")
    return code, text[:200]


def _too_big() -> object:
    raise Malformed(f"an answer over {MAX_ANSWER_BYTES} bytes")


class Backend:
    """The shared HTTP client: created on first use, closed with the app (Services.close)."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.proxy_timeout
        self.queue_timeout = settings.auth_timeout
        self._size = settings.proxy_max_concurrency
        self._slots = asyncio.Semaphore(self._size)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=self._size, max_keepalive_connections=self._size)
            self._client = httpx.AsyncClient(
                limits=limits, timeout=self.timeout, follow_redirects=False, trust_env=False
            )
        return self._client

    async def call(
        self,
        kind: str,
        url: str,
        body: dict[str, Any],
        parse: Callable[[dict[str, Any]], T],
        headers: dict[str, str] | None = None,
    ) -> T:
        """POST ``body``; the parsed ``result``. Raises ProxyFailed, BackendError or BackendDisconnect."""
        if not tracing.ON:
            return await self._call(kind, url, body, parse, headers or {})
        # kind is one of the proxy kinds (a bounded name); an error leaving the call is recorded.
        with tracing.span(f"proxy {kind}", "client", {"switchboard.proxy": kind}):
            sent = dict(headers or {})
            tracing.inject(sent)  # the backend's own trace may continue this one
            return await self._call(kind, url, body, parse, sent)

    async def _call(
        self, kind: str, url: str, body: dict[str, Any], parse: Callable[[dict[str, Any]], T], headers: dict[str, str]
    ) -> T:
        started = time.perf_counter()
        outcome = "ok"
        try:
            answer = await self._post(kind, url, orjson.dumps(body), headers)
            try:
                return parse(_envelope(answer))
            except Malformed:
                raise ProxyFailed(kind, "malformed") from None
        except BackendDisconnect:
            outcome = "disconnect"
            raise
        except BackendError:
            outcome = "error"
            raise
        except ProxyFailed as exc:
            outcome = exc.result
            raise
        finally:
            metrics.PROXY_CALLS.labels(kind, outcome).inc()
            metrics.PROXY_SECONDS.labels(kind).observe(time.perf_counter() - started)

    async def _post(self, kind: str, url: str, content: bytes, headers: dict[str, str]) -> object:
        try:
            async with asyncio.timeout(self.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise ProxyFailed(kind, "busy") from None
        # The request is a task of its own that nothing outside ever cancels: httpcore 1.0 leaks a
        # pool connection for good when a request is cancelled under contention (encode/httpcore
        # issue 1093), and a storm of timeouts left every slot leaked and every call timing out.
        # httpx's own timeouts end it; the caller only stops waiting at the deadline (or when its
        # client goes away), and the slot frees when the request really ends.
        task = asyncio.ensure_future(self._send(url, content, headers))
        task.add_done_callback(self._ended)
        done, _ = await asyncio.wait((task,), timeout=self.timeout)
        if not done:
            raise ProxyFailed(kind, "timeout")
        try:
            status, raw = task.result()
        except httpx.TimeoutException:
            raise ProxyFailed(kind, "timeout") from None
        except httpx.HTTPError:
            raise ProxyFailed(kind, "unreachable") from None
        except Exception:  # a request httpx could not even build: refused, never a 1011 or 500
            log.warning("proxy %s: request failed to build", kind, exc_info=True)
            raise ProxyFailed(kind, "malformed") from None
        if not 200 <= status < 300:
            raise ProxyFailed(kind, "status")
        try:
            return orjson.loads(raw) if raw is not None else _too_big()
        except (orjson.JSONDecodeError, Malformed):
            raise ProxyFailed(kind, "malformed") from None

    async def _send(self, url: str, content: bytes, headers: dict[str, str]) -> tuple[int, bytes | None]:
        """The status and the body (None when over MAX_ANSWER_BYTES); httpx errors raised."""
        client = self._http()
        # As bytes: a handshake header's value is whatever bytes the client sent (ASGI decodes them
        # as latin-1, which round-trips), and httpx would refuse a str that is not ASCII.
        sent = {_header_bytes(name): _header_bytes(value) for name, value in headers.items()}
        sent[b"Content-Type"] = b"application/json"
        request = client.build_request("POST", url, content=content, headers=sent)
        response = await client.send(request, stream=True)
        try:
            if not 200 <= response.status_code < 300:
                return response.status_code, b""
            raw = bytearray()
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > MAX_ANSWER_BYTES:
                    return response.status_code, None
            return response.status_code, bytes(raw)
        finally:
            await response.aclose()

    def _ended(self, task: asyncio.Future[tuple[int, bytes | None]]) -> None:
        self._slots.release()
        if not task.cancelled():
            task.exception()  # retrieved: a call given up on at its deadline may still fail later

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _header_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:  # an emulated header (Centrifugo's connect ``headers``) is any text
        return value.encode()
