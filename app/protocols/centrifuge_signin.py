"""Who a ``/connection/websocket`` client is, from its ``connect`` command: its token or, without
one, the connect proxy, as on ``/ws``; then the connect checks and the per-user connection limit.
A refusal is an error reply and a close with Centrifugo's code (``app.errors.CENTRIFUGE_CLOSES``).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from app.broker import BrokerUnavailable
from app.errors import CentrifugeDisconnect, CentrifugeError, CloseCode, ProtocolError
from app.hooks import UNCHANGED
from app.protocols.centrifuge_codec import as_centrifuge, emulated_headers
from app.protocols.centrifuge_commands import CommandError, token_identity
from app.protocols.proxied import ProxyRefresh, connect_by_proxy, connect_close, proxied_reply
from app.session import Session


class Signing(Protocol):
    """What of the client (app/protocols/centrifuge.py ``CentrifugeClient``) signing in uses."""

    session: Session
    _refresh: ProxyRefresh | None  # set for a proxied identity: the refresh proxy renews it

    def _expired(self) -> None: ...

    def error(self, cmd_id: int | None, code: int, message: str) -> None: ...

    def close_with(self, code: int, reason: str | None = None) -> None: ...

    def refuse(self, cmd_id: int | None, code: int, message: str, close: int) -> bool: ...


async def sign_in(client: Signing, cmd_id: int, params: dict[str, Any]) -> dict[str, Any] | None:
    """The connect reply's extra fields (the proxy's ``data``); None once refused and closing."""
    session = client.session
    token, extra = params.get("token") or None, cast(dict[str, Any], {})
    headers, session.handshake = session.handshake, None  # read once, never kept
    proxied = token is None and headers is not None
    try:
        if proxied:
            assert headers is not None
            # Centrifugo's emulated headers: only the names SWITCHBOARD_PROXY_EMULATED_HEADERS
            # lists, and never in place of a real handshake header (a gateway's X-Forwarded-For).
            emulated = emulated_headers(params.get("headers"), session.services.proxies.emulated)
            headers = {**emulated, **headers}
            connected = await connect_by_proxy(session, params.get("data", UNCHANGED), headers)
            identity = connected.identity
            client._refresh, extra = proxied_reply(session, connected, client._expired)
        else:
            identity = await token_identity(session, token)
        session.set_identity(identity)
        await session.permissions.check_connect(session)
        if not await session.sign_in(identity):
            limit = CentrifugeDisconnect.CONNECTION_LIMIT
            client.refuse(cmd_id, CentrifugeError.LIMIT_EXCEEDED, "this user has too many connections", limit)
            return None
    except CommandError as exc:
        close = CentrifugeDisconnect.EXPIRED if exc.code is CentrifugeError.TOKEN_EXPIRED else None
        client.refuse(cmd_id, exc.code, exc.message, close or CentrifugeDisconnect.INVALID_TOKEN)
        return None
    except ProtocolError as exc:  # the connect hook or proxy said no
        code, message = as_centrifuge(exc)
        shut, reason = connect_close(exc)  # a backend's own code, or 1013 (3004) if it failed
        if shut == CloseCode.POLICY_VIOLATION:  # a refusal: the proxy's is the token's
            refused = CentrifugeDisconnect.INVALID_TOKEN if proxied else CentrifugeDisconnect.FORCE_NO_RECONNECT
            shut = int(refused)
        client.error(cmd_id, code, message)
        client.close_with(shut, reason)
        return None
    except BrokerUnavailable:
        message = "broker unavailable: try again"
        client.refuse(cmd_id, CentrifugeError.NOT_AVAILABLE, message, CentrifugeDisconnect.SERVER_ERROR)
        return None
    return extra
