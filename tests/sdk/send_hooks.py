"""The hook the JS namespace-options test loads: ``on_rpc`` keeps what each client ``send``s
(Centrifugo's async message, method ``$send`` here) and ``sent.list`` answers it back."""

from __future__ import annotations

from typing import Any

from app.hooks import ClientInfo


class Hooks:
    def __init__(self) -> None:
        self.sent: dict[str, list[Any]] = {}

    async def on_rpc(self, client: ClientInfo, method: str, data: Any) -> Any:
        if method == "$send":
            self.sent.setdefault(client.client, []).append(data)
            return None
        if method == "sent.list":
            return self.sent.get(client.client, [])
        return {"method": method}


hooks = Hooks()
