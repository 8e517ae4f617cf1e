"""The ``/ws`` ``rpc`` command: ``{"id":N,"op":"rpc","method":M,"data":D}`` -> ``{"id":N,"ok":true,"data":...}``.

Where a method goes, first match wins:

1. the longest prefix of the namespaces file's ``[rpc.proxies]`` that ``method`` starts with;
2. ``SWITCHBOARD_RPC_PROXY_URL``;
3. the hook's ``on_rpc(client, method, data)`` (app/hooks.py);
4. nowhere: error 104, as an unknown op.

A proxy's refusal is its own code (400-1999) or a disconnect; a proxy that fails is 113; a hook
that raises or times out is 100; a hook's ``Deny("why")`` is 103. The socket stays open, except
for a backend's disconnect.
"""

from __future__ import annotations

from typing import Any

from app.errors import ErrorCode, ProtocolError
from app.hooks import Deny
from app.permissions import client_info
from app.session import Session

MAX_METHOD = 256


def method_of(frame: dict[str, Any]) -> str:
    method = frame.get("method")
    if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD or not method.isprintable():
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"method must be 1-{MAX_METHOD} printable characters")
    return method


async def rpc(session: Session, cmd_id: int, frame: dict[str, Any]) -> dict[str, Any]:
    method, data = method_of(frame), frame.get("data")
    services = session.services
    url = services.settings.namespaces.rpc_proxy(method) or services.settings.rpc_proxy_url
    if url:
        answer = await services.proxies.rpc(
            url, session.client, session.identity, method, data, session.proxy_transport
        )
        return {"data": answer}
    hooks = services.permissions.hooks
    if hooks.has("on_rpc"):
        answer = await hooks.invoke("on_rpc", client_info(session.client, session.identity), method, data)
        if isinstance(answer, Deny):
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, answer.message)
        return {"data": answer}
    raise ProtocolError(ErrorCode.UNKNOWN_OP, "rpc: no proxy or hook takes this method")
