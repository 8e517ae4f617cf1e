"""The request and result shapes of each proxy, Centrifugo's (centrifugal.dev, "Proxy to backend").

A backend written for Centrifugo's HTTP proxies works unchanged. Every request carries ``client``,
``transport`` (``websocket``), ``protocol`` and ``encoding`` (``json``); beyond those:

==========  ===============================  ==============================================
kind        request adds                     result read
==========  ===============================  ==============================================
connect     ``data`` (the connect command's) ``user``, ``name``, ``channels``, ``info``,
            and the allowlisted headers      ``expire_at``, ``data``/``b64data``
refresh     ``user``                         ``expired``, ``expire_at``, ``info``
subscribe   ``user``, ``channel``            (any object allows)
publish     ``user``, ``channel``, ``data``  ``data``/``b64data``: published instead
rpc         ``user``, ``method``, ``data``   ``data``/``b64data``: the reply's ``data``
==========  ===============================  ==============================================

``channels`` are granted as the JWT's ``channels`` claim is (Centrifugo subscribes the connection to
them instead). ``b64data`` must decode to JSON: this protocol carries JSON only.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from app.auth import DEFAULT_NAME, MAX_INFO_BYTES, Identity
from app.config import Settings
from app.hooks import UNCHANGED
from app.proxy import Backend, Malformed

TRANSPORT = {"transport": "websocket", "protocol": "json", "encoding": "json"}


@dataclass(frozen=True, slots=True)
class Connected:
    """The connect proxy's answer: who the client is, and ``data`` for its connect reply."""

    identity: Identity
    data: Any = UNCHANGED


def _data(result: dict[str, Any]) -> Any:
    """``data``, or ``b64data`` decoded (it must be JSON), or UNCHANGED when neither is given."""
    if "b64data" in result:
        encoded = result["b64data"]
        if not isinstance(encoded, str):
            raise Malformed("b64data must be a string")
        try:
            return orjson.loads(base64.b64decode(encoded, validate=True))
        except (binascii.Error, orjson.JSONDecodeError):
            raise Malformed("b64data is not base64 of JSON") from None
    return result.get("data", UNCHANGED)


def _info(result: dict[str, Any]) -> dict[str, Any] | None:
    info = result.get("info")
    if info is not None and (not isinstance(info, dict) or len(orjson.dumps(info)) > MAX_INFO_BYTES):
        raise Malformed(f"info must be an object of at most {MAX_INFO_BYTES} bytes")
    return info


def _expire_at(result: dict[str, Any]) -> int | None:
    value = result.get("expire_at") or None  # 0, as in Centrifugo: never expires
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise Malformed("expire_at must be Unix seconds")
    return value


def parse_connect(result: dict[str, Any]) -> Connected:
    user, name, channels = result.get("user"), result.get("name", DEFAULT_NAME), result.get("channels", [])
    if not isinstance(user, str) or not isinstance(name, str):
        raise Malformed("user (and name) must be strings")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise Malformed("channels must be a list of strings")
    if channels and not user:  # as a token with an empty sub: grants belong to someone
        raise Malformed("channels need a user: an anonymous connection holds no grants")
    identity = Identity(
        user_id=user,
        name=name if user else "Anonymous",
        channels=tuple(channels),
        info=_info(result),
        expires=_expire_at(result),
    )
    return Connected(identity, _data(result))


def refresh_parser(identity: Identity) -> Callable[[dict[str, Any]], Identity | None]:
    """The refreshed identity, or None when the backend says ``expired`` (or gives no new time)."""

    def parse(result: dict[str, Any]) -> Identity | None:
        expired, expire_at = result.get("expired", False), _expire_at(result)
        if not isinstance(expired, bool):
            raise Malformed("expired must be a boolean")
        if expired or expire_at is None:
            return None
        info = _info(result) if "info" in result else identity.info
        return replace(identity, info=info, expires=expire_at)

    return parse


def _allowed(result: dict[str, Any]) -> None:
    return None


def pick_headers(raw: Iterable[tuple[bytes, bytes]], allowed: frozenset[bytes]) -> dict[str, str]:
    """The handshake's headers that the allowlist names (ASGI gives them lower-cased)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw if name in allowed}


class Proxies:
    """One method per proxy kind; each builds its request and reads its result (see the table)."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.backend = backend
        self.connect_url = settings.connect_proxy_url
        self.refresh_url = settings.refresh_proxy_url
        self.headers = frozenset(name.lower().encode("latin-1") for name in settings.proxy_headers)
        self.emulated = frozenset(name.lower().encode("latin-1") for name in settings.proxy_emulated_headers)

    async def connect(self, client: str, data: Any, headers: dict[str, str]) -> Connected:
        assert self.connect_url is not None
        body = {"client": client, **TRANSPORT, **({} if data is UNCHANGED else {"data": data})}
        return await self.backend.call("connect", self.connect_url, body, parse_connect, headers)

    async def refresh(self, client: str, identity: Identity) -> Identity | None:
        assert self.refresh_url is not None
        body = {"client": client, **TRANSPORT, "user": identity.user_id}
        return await self.backend.call("refresh", self.refresh_url, body, refresh_parser(identity))

    async def subscribe(self, url: str, client: str, identity: Identity, channel: str) -> None:
        body = {"client": client, **TRANSPORT, "user": identity.user_id, "channel": channel}
        await self.backend.call("subscribe", url, body, _allowed)

    async def publish(self, url: str, client: str, identity: Identity, channel: str, data: Any) -> Any:
        """The data to publish: the backend's replacement, or UNCHANGED."""
        body = {"client": client, **TRANSPORT, "user": identity.user_id, "channel": channel, "data": data}
        return await self.backend.call("publish", url, body, _data)

    async def rpc(self, url: str, client: str, identity: Identity, method: str, data: Any) -> Any:
        body = {"client": client, **TRANSPORT, "user": identity.user_id, "method": method, "data": data}
        found = await self.backend.call("rpc", url, body, _data)
        return None if found is UNCHANGED else found
