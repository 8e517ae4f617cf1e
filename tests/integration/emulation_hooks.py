"""The hook test_emulation.py loads: an rpc ``slow`` that keeps its connection's command worker
busy for a while, so that the commands sent behind it wait, and their bound can be seen."""

from __future__ import annotations

import asyncio
from typing import Any

from app.hooks import ClientInfo

SLOW_SECONDS = 1.5  # within SWITCHBOARD_HOOK_TIMEOUT (2 s by default)


class Hooks:
    async def on_rpc(self, client: ClientInfo, method: str, data: Any) -> Any:
        if method == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        return {"method": method}


hooks = Hooks()
