"""The hook the proxy tests load: ``on_rpc`` answers the methods no proxy takes."""

from __future__ import annotations

from typing import Any

from app.hooks import ClientInfo, Deny


class Hooks:
    async def on_rpc(self, client: ClientInfo, method: str, data: Any) -> Any:
        if method == "hook.deny":
            return Deny("not by hook")
        if method == "hook.raise":
            raise RuntimeError("the rpc hook broke")
        return {"method": method, "echo": data, "user": client.user}


hooks = Hooks()
