"""Shared history reads: many clients resuming a channel from the same offset cost one read.

In a reconnect storm every client of a channel saw the same last message, so they all resume from
the same offset within a second or two. Reading history once per client would send thousands of
identical reads to Redis (and hold thousands of copies of the same page).

A read may only be shared by callers that were waiting *before it was issued*: a caller registers
for live messages first (``Hub.join``), and a read that began earlier could miss a message
published between its snapshot and that registration. So per (channel, since) there is at most
one read in flight and one queued: callers arriving while a read is in flight wait for the queued
one, which is issued as soon as the first completes and serves all of them.
"""

from __future__ import annotations

import asyncio

from app.broker import Broker, History

Key = tuple[str, int, int | None]


class _Slot:
    __slots__ = ("queued", "running")

    def __init__(self) -> None:
        self.running: asyncio.Future[History] | None = None
        self.queued: asyncio.Future[History] | None = None


class SharedReads:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._slots: dict[Key, _Slot] = {}

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        """``broker.history``, issued after this call began, and shared with concurrent callers.

        A caller that is cancelled does not cancel the read for the others.
        """
        key = (channel, since, limit)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        if slot.running is None:
            future = slot.running = self._issue(key, slot)
        else:
            if slot.queued is None:
                slot.queued = asyncio.get_running_loop().create_future()
            future = slot.queued
        return await asyncio.shield(future)

    def _issue(self, key: Key, slot: _Slot) -> asyncio.Future[History]:
        task = asyncio.ensure_future(self._broker.history(*key))
        task.add_done_callback(lambda done: self._finished(key, slot, done))
        return task

    def _finished(self, key: Key, slot: _Slot, done: asyncio.Future[History]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved here, so one that every caller abandoned is not logged
        queued, slot.queued = slot.queued, None
        if queued is None:
            slot.running = None
            del self._slots[key]
            return
        # Everyone waiting on ``queued`` registered before this moment: issue their read now.
        running = slot.running = self._issue(key, slot)
        running.add_done_callback(lambda result: _copy(result, queued))


def _copy(source: asyncio.Future[History], target: asyncio.Future[History]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
        target.exception()  # retrieved: callers that all went away must not make asyncio log it
    else:
        target.set_result(source.result())
