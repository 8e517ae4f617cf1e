"""A backend's client for the server API: ``SwitchboardAPI`` (async) and ``SwitchboardAPISync``.

    async with SwitchboardAPI("http://switchboard:8000", api_key=KEY) as api:
        await api.publish("news:eu", {"headline": "..."})
        await api.disconnect("alice", reason="account suspended")

Every method is one ``POST /api/v1/<method>`` (docs/server-api.md). An error reply raises
``APIError`` with the HTTP status and the protocol's code. ``publish`` always sends an idempotency
key (yours, or a fresh one) and retries a 503 or a lost connection with that same key, so a
retry never publishes twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import httpx

R = TypeVar("R")
RETRIES = 3
BACKOFF = 0.2  # seconds, doubled on each retry


class APIError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


INTERNAL = 100  # the protocol's code for "no code of its own", as in the server's error table


def _result(response: httpx.Response) -> dict[str, Any]:
    """The reply's JSON object, or ``APIError`` for anything else.

    Not every reply is Switchboard's: a proxy or gateway in front of it answers with its own bodies
    (``{"error": "text"}``, HTML, plain text). Those raise ``APIError`` too, with code 100 and the
    body's text as the message, never an ``AttributeError`` or ``ValueError`` from parsing them.
    """
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict):
        return body
    if response.status_code == 200:
        raise APIError(200, INTERNAL, f"the reply is not a JSON object: {response.text[:200]}")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        code = code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL
        raise APIError(response.status_code, code, response.text if message is None else str(message))
    message = error if isinstance(error, str) else response.text
    raise APIError(response.status_code, INTERNAL, message)


def _retriable(exc: Exception) -> bool:
    return isinstance(exc, httpx.TransportError) or (isinstance(exc, APIError) and exc.status == 503)


class _Methods(Generic[R]):
    """The typed methods, shared: each is one ``_call``, which the two clients implement."""

    def _call(self, method: str, body: dict[str, Any]) -> R:
        raise NotImplementedError

    def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> R:
        """``{"offset","epoch"}``; retried with the same idempotency key on 503."""
        key = idempotency_key or uuid.uuid4().hex
        return self._call("publish", {"channel": channel, "data": data, "idempotency_key": key})

    def broadcast(self, channels: list[str], data: Any) -> R:
        return self._call("broadcast", {"channels": channels, "data": data})

    def send(self, user: str, data: Any) -> R:
        return self._call("send", {"user": user, "data": data})

    def disconnect(self, user: str, *, code: int = 4003, reason: str = "") -> R:
        return self._call("disconnect", {"user": user, "code": code, "reason": reason})

    def subscribe(self, user: str, channel: str) -> R:
        return self._call("subscribe", {"user": user, "channel": channel})

    def unsubscribe(self, user: str, channel: str) -> R:
        return self._call("unsubscribe", {"user": user, "channel": channel})

    def presence(self, channel: str, *, cursor: str | None = None, limit: int = 1000) -> R:
        """One page: ``{"clients", "cursor"}``; pass ``cursor`` back for the next (None: done)."""
        return self._call("presence", {"channel": channel, "limit": limit, **({"cursor": cursor} if cursor else {})})

    def presence_stats(self, channel: str) -> R:
        return self._call("presence_stats", {"channel": channel})

    def history(self, channel: str, *, since: int | None = None, limit: int = 100) -> R:
        return self._call(
            "history", {"channel": channel, "limit": limit, **({} if since is None else {"since": since})}
        )

    def channels(self, prefix: str = "") -> R:
        return self._call("channels", {"prefix": prefix})

    def info(self) -> R:
        return self._call("info", {})

    def top_channels(self, *, sort: str = "subscribers", limit: int = 20) -> R:
        """``{"channels": [{"channel","subscribers","rate"}], "answered", "missing"}``."""
        return self._call("top_channels", {"sort": sort, "limit": limit})

    def user_connections(self, user: str) -> R:
        """Every connection of ``user`` on every instance: ``{"connections", "answered", "missing"}``."""
        return self._call("user_connections", {"user": user})


def _headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key, "Content-Type": "application/json"}


class SwitchboardAPI(_Methods[Coroutine[Any, Any, dict[str, Any]]]):
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, retries: int = RETRIES) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout)
        self._retries = retries

    async def __aenter__(self) -> SwitchboardAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _call(self, method: str, body: dict[str, Any]) -> Coroutine[Any, Any, dict[str, Any]]:
        return self._send(method, body)

    async def _send(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        attempts = self._retries + 1 if method == "publish" else 1
        for attempt in range(attempts):
            try:
                return _result(await self._http.post(f"/api/v1/{method}", json=body))
            except (httpx.TransportError, APIError) as exc:
                if attempt + 1 == attempts or not _retriable(exc):
                    raise
                await asyncio.sleep(BACKOFF * 2**attempt)
        raise AssertionError("unreachable")


class SwitchboardAPISync(_Methods[dict[str, Any]]):
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, retries: int = RETRIES) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)
        self._retries = retries
        self._sleep: Callable[[float], None] = time.sleep

    def __enter__(self) -> SwitchboardAPISync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        attempts = self._retries + 1 if method == "publish" else 1
        for attempt in range(attempts):
            try:
                return _result(self._http.post(f"/api/v1/{method}", json=body))
            except (httpx.TransportError, APIError) as exc:
                if attempt + 1 == attempts or not _retriable(exc):
                    raise
                self._sleep(BACKOFF * 2**attempt)
        raise AssertionError("unreachable")
