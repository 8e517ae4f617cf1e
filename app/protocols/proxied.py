"""The backend's connect and refresh proxies as the protocols use them: ``/ws``, Centrifugo's and the
streams (docs/proxies.md).

A ``connect`` without a token goes to ``SWITCHBOARD_CONNECT_PROXY_URL`` when it is set; a token,
when present, is verified as before. An identity the connect proxy gave an ``expire_at`` is
refreshed by the server itself at that time through ``SWITCHBOARD_REFRESH_PROXY_URL`` (the client
does nothing); without a refresh proxy it expires like a token, unless the client sends `refresh`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from app.errors import AUTH_FAILED, BACKEND_UNAVAILABLE, CloseCode, ProtocolError
from app.hooks import UNCHANGED
from app.proxy import BackendDisconnect, BackendError, ProxyFailed
from app.proxy_calls import Connected
from app.session import Session

log = logging.getLogger("switchboard.proxy")

# A refresh call that failed (timeout, 5xx) is tried again after this long, until the grace ends:
# a few calls per connection and grace period at most, never a loop as fast as the backend fails.
RETRY_FRACTION = 0.25


def connect_close(exc: ProtocolError) -> tuple[int, str | None]:
    """How a refused ``connect`` closes: the backend's own code, 1013 when it could not answer."""
    if isinstance(exc, BackendDisconnect):
        return exc.close_code, exc.reason
    if isinstance(exc, ProxyFailed):
        return CloseCode.TRY_AGAIN_LATER, BACKEND_UNAVAILABLE
    return CloseCode.POLICY_VIOLATION, AUTH_FAILED


async def connect_by_proxy(session: Session, data: object, headers: dict[str, str]) -> Connected:
    """Ask the backend who this client is; raises ProtocolError (and subclasses) to refuse."""
    return await session.services.proxies.connect(session.client, data, headers)


def proxied_reply(
    session: Session, connected: Connected, expired: Callable[[], None]
) -> tuple[ProxyRefresh | None, dict[str, Any]]:
    """A server-side refresh, when the backend gave an expiry and has a refresh proxy; and the
    connect reply's extra fields."""
    refresh = None
    if connected.identity.expires is not None and session.services.settings.refresh_proxy_url:
        refresh = ProxyRefresh(session, session.services.settings.refresh_grace, expired)
        session.renew_with(refresh.start)  # set before the identity, whose expiry then calls it
    return refresh, ({} if connected.data is UNCHANGED else {"data": connected.data})


class ProxyRefresh:
    """The server-side refresh of one connection's proxied identity (the refresh proxy)."""

    def __init__(self, session: Session, grace: float, expired: Callable[[], None]) -> None:
        self.session = session
        self.grace = grace
        self.expired = expired
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def stop(self) -> None:
        """No more server-side refreshes: the connection closes, or took a token."""
        self.session.renew_with(None)
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        identity = self.session.identity
        deadline = (identity.expires or 0) + self.grace
        proxies, conn = self.session.services.proxies, self.session.conn
        while True:
            try:
                found = await proxies.refresh(self.session.client, identity)
            except BackendDisconnect as exc:
                conn.close(exc.close_code, exc.reason)
                return
            except BackendError:
                found = None  # an error is an answer: this identity is not refreshed
            except ProxyFailed as exc:
                left = deadline - time.time()
                if left <= 0:
                    log.warning("refresh proxy failed until the grace period ended: %s", exc.message)
                    found = None
                else:
                    await asyncio.sleep(min(left, max(0.1, self.grace * RETRY_FRACTION)))
                    continue
            if found is None:
                self.expired()
            else:
                # Only the expiry and info move (the channels stay): nothing to re-check.
                self.session.set_identity(found)
            return
