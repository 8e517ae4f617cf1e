"""The hook runner answers at the deadline, whatever the hook does with its cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.errors import ErrorCode, ProtocolError
from app.hooks import Allow, ClientInfo
from app.permissions import Hooks

CLIENT = ClientInfo("c1", "ann", "Ann", None, ())


class Stubborn:
    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def on_subscribe(self, client: ClientInfo, channel: str) -> bool:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # swallowed: answers anyway, late
        self.finished.set()
        return True

    async def on_publish(self, client: ClientInfo, channel: str, data: object) -> Allow:
        return Allow(data="fast")


async def test_a_late_verdict_is_refused_at_the_deadline() -> None:
    target = Stubborn()
    hooks = Hooks(target, timeout=0.05)
    start = time.monotonic()
    with pytest.raises(ProtocolError) as refused:
        await hooks.ask("on_subscribe", CLIENT, "team:a")
    assert refused.value.code == ErrorCode.INTERNAL
    assert time.monotonic() - start < 0.25  # the hook itself goes on for 0.3 s after its deadline
    # The overrunning call is kept until it ends (not collected mid-run), then forgotten.
    await asyncio.wait_for(target.finished.wait(), 5)
    await asyncio.sleep(0)
    assert not hooks._overrunning


async def test_a_verdict_in_time_is_taken() -> None:
    hooks = Hooks(Stubborn(), timeout=1.0)
    assert await hooks.ask("on_publish", CLIENT, "x:a", "slow") == Allow(data="fast")
    assert await hooks.ask("on_connect", CLIENT) is None  # not defined: no opinion
