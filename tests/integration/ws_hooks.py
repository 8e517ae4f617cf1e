"""The permission hook the /ws protocol tests load (SWITCHBOARD_HOOKS=tests.integration.ws_hooks:hooks)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.hooks import Allow, ClientInfo, Deny, Verdict


class Hooks:
    async def on_connect(self, client: ClientInfo) -> Verdict:
        return Deny("banned user") if client.user == "banned" else None

    async def on_subscribe(self, client: ClientInfo, channel: str) -> Verdict:
        if channel == "hooked:deny":
            return Deny("not today")
        if channel == "hooked:allow":
            return True
        if channel == "hooked:raise":
            raise RuntimeError("the hook broke")
        if channel == "hooked:hang":
            await asyncio.sleep(30)
        if channel == "hooked:stubborn":  # swallows its cancellation, then allows, too late
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(4)
            return True
        return None

    async def on_publish(self, client: ClientInfo, channel: str, data: Any) -> Verdict:
        if channel == "x:shout" and isinstance(data, str):
            return Allow(data=data.upper())
        return None


hooks = Hooks()
