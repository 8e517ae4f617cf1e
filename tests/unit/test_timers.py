"""app/timers.py: many connections' timers on one event-loop timer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app import metrics
from app.timers import SLACK, Timers, timers
from tests.support import eventually

pytestmark = pytest.mark.timeout(10)


async def wait_for_empty(wheel: Timers) -> None:
    await eventually(lambda: not len(wheel), 2, "every timer to run")


async def test_timers_fire_in_time_order_never_early_and_within_the_slack() -> None:
    loop = asyncio.get_running_loop()
    wheel = Timers(loop)
    fired: list[tuple[str, float, float]] = []

    def at(name: str, delay: float) -> None:
        due = loop.time() + delay
        wheel.call_later(delay, lambda: fired.append((name, due, loop.time())))

    at("late", 0.12)
    at("early", 0.03)  # scheduled after a later one: the single loop timer is moved forward
    at("middle", 0.06)
    at("tie-1", 0.09)
    at("tie-2", 0.09)
    await wait_for_empty(wheel)
    assert [name for name, _, _ in fired] == ["early", "middle", "tie-1", "tie-2", "late"]
    for name, due, ran in fired:
        assert ran >= due, f"{name} fired {due - ran:.4f}s early"
        assert ran - due < SLACK + 0.1, f"{name} fired {ran - due:.3f}s late"


async def test_a_cancelled_timer_never_runs_and_its_neighbours_do() -> None:
    wheel = Timers(asyncio.get_running_loop())
    fired: list[str] = []
    keep = wheel.call_later(0.02, lambda: fired.append("kept"))
    drop = wheel.call_later(0.01, lambda: fired.append("dropped"))
    drop.cancel()
    assert drop.cancelled()
    assert not keep.cancelled()
    await wait_for_empty(wheel)
    assert fired == ["kept"]
    assert keep.cancelled()  # a timer that ran holds no callback any more


async def test_a_failing_callback_is_logged_and_counted_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wheel = Timers(asyncio.get_running_loop())
    fired: list[int] = []
    before = metrics.LISTENER_ERRORS._value.get()

    def boom() -> None:
        raise RuntimeError("boom")

    wheel.call_later(0.01, lambda: fired.append(1))
    wheel.call_later(0.01, boom)
    wheel.call_later(0.01, lambda: fired.append(2))
    with caplog.at_level(logging.ERROR, logger="app.timers"):
        await wait_for_empty(wheel)
    assert fired == [1, 2]
    assert metrics.LISTENER_ERRORS._value.get() == before + 1
    assert "a connection timer failed" in caplog.text


async def test_a_callback_may_schedule_the_next_timer() -> None:
    # The keepalives do: a ping schedules its pong deadline, which schedules the next ping.
    wheel = Timers(asyncio.get_running_loop())
    rounds: list[int] = []

    def again() -> None:
        rounds.append(len(rounds))
        if len(rounds) < 5:
            wheel.call_later(0.005, again)

    wheel.call_later(0.005, again)
    await wait_for_empty(wheel)
    assert rounds == [0, 1, 2, 3, 4]


async def test_a_callback_renewing_itself_with_no_delay_runs_once_per_wake_up() -> None:
    # The loop's clock stands still within one run of the heap: "due now" must mean the next run.
    wheel = Timers(asyncio.get_running_loop())
    runs: list[float] = []

    def renew() -> None:
        runs.append(wheel.loop.time())
        if len(runs) < 5:
            wheel.call_later(0, renew)

    wheel.call_later(0, renew)
    await wait_for_empty(wheel)
    assert len(runs) == 5
    assert runs == sorted(set(runs))  # each at a later time than the one before


async def test_one_timer_heap_per_running_loop() -> None:
    first = timers()
    assert timers() is first
    assert first.loop is asyncio.get_running_loop()
