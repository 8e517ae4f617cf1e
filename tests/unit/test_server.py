"""The per-socket pieces of app/server.py that stand in for uvicorn's asyncio objects."""

from __future__ import annotations

import asyncio

import pytest

from app.server import _EventQueue, _Writable

pytestmark = pytest.mark.timeout(10)


async def test_event_queue_hands_out_events_in_order_and_wakes_its_reader() -> None:
    queue = _EventQueue()
    assert queue.empty()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await reader == "a"
    assert await queue.get() == "b"
    assert queue.empty()
    for n in range(10_000):  # one chunk from the peer can hold thousands of frames
        queue.put_nowait(n)
    assert [await queue.get() for _ in range(10_000)] == list(range(10_000))
    assert queue.empty()


async def test_writable_wakes_every_waiter_and_one_timing_out_leaves_the_others_waiting() -> None:
    writable = _Writable()
    assert writable.is_set()
    await asyncio.wait_for(writable.wait(), 1)  # set: returns at once
    writable.clear()
    impatient = asyncio.ensure_future(asyncio.wait_for(writable.wait(), 0.05))
    patient = [asyncio.ensure_future(writable.wait()) for _ in range(3)]
    with pytest.raises(TimeoutError):
        await impatient
    assert not any(w.done() for w in patient)
    writable.set()
    await asyncio.wait_for(asyncio.gather(*patient), 1)
    assert writable.is_set()
