"""The per-connection budgets' arithmetic (app/budgets.py), with explicit times."""

from __future__ import annotations

import math

from app.budgets import MAX_CALLERS, CallerRates, InFlight, JoinLeave, TokenBucket
from app.channel_state import Subscription
from app.protocol import Envelope


def test_a_bucket_starts_full_and_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(1, 0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(1, 0.5)  # 0.5 s at 2/s: one token
    assert not bucket.take(1, 0.5)
    assert bucket.full(100)
    assert bucket.tokens == 3  # never more than the burst


def test_take_is_all_or_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=5, now=0)
    assert not bucket.take(6, 0)
    assert bucket.tokens == 5


def test_spend_goes_into_debt_and_delay_says_until_when() -> None:
    bucket = TokenBucket(rate=1000, burst=1000, now=0)
    assert bucket.delay(0) == 0
    bucket.spend(3000, 0)  # a read bigger than what was left: allowed, then owed
    assert bucket.tokens == -2000
    assert math.isclose(bucket.delay(0), 2.0)
    assert math.isclose(bucket.delay(1.5), 0.5)
    assert bucket.delay(2.01) == 0


def test_a_clock_that_goes_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=2, now=10)
    bucket.spend(2, 10)
    assert not bucket.take(1, 5)
    assert bucket.take(1, 11)


def test_bytes_over_a_window_are_at_most_burst_plus_rate_plus_one_read() -> None:
    """How the history budget is used: read while not spent, then spend what the read returned."""
    bucket, now, page, got = TokenBucket(rate=100, burst=400, now=0), 0.0, 250, 0
    while now < 10:
        if bucket.delay(now) == 0:
            bucket.spend(page, now)
            got += page
        now += 0.01
    assert got <= 400 + 100 * 10 + page


def test_join_leave_pushes_a_burst_then_one_per_refill_and_every_leave_of_a_pushed_join() -> None:
    budget = JoinLeave(rate=0.1, burst=3, keep=8)
    pushed = []
    for n in range(10):  # ten subscribe/unsubscribe cycles in one second
        now = n / 10
        pushed += [budget.join("c", now), budget.leave("c")]
    assert pushed == [True, True] * 3 + [False, False] * 7
    assert budget.join("c", 11)  # ten seconds later: one more token
    assert budget.join("other", 11)  # each channel has its own bucket
    assert budget.leave("c")
    assert not budget.leave("c")  # no second leave for one join


def test_join_leave_burst_zero_is_off() -> None:
    budget = JoinLeave(rate=0.1, burst=0, keep=8)
    assert all(budget.join("c", 0) for _ in range(100))
    assert budget.leave("c")
    assert not budget.leave("never-joined")  # a leave still needs its join


def test_join_leave_keeps_a_bounded_number_of_buckets() -> None:
    budget = JoinLeave(rate=0.1, burst=3, keep=4)
    for n in range(1000):  # a fresh channel name per subscribe
        budget.join(f"c{n}", n / 100)
        budget.leave(f"c{n}")
    assert len(budget._buckets) <= 4


def test_join_leave_never_forgets_a_channel_whose_leave_is_owed() -> None:
    budget = JoinLeave(rate=0.1, burst=3, keep=2)
    assert budget.join("a", 0)
    for n in range(10):
        budget.join(f"x{n}", 0)
    assert budget.leave("a")  # its join was pushed, so its leave is too, buckets pruned or not


def test_in_flight_stops_at_the_count_or_the_bytes_but_always_lets_one_in() -> None:
    load = InFlight(max_count=3, max_bytes=100)
    load.add(500)  # bigger than the budget alone: let in, then nothing more until it is done
    assert load.full
    load.done(500)
    assert not load.full
    for _ in range(3):
        load.add(10)
    assert load.full  # the count
    load.done(10)
    assert not load.full
    load.add(90)
    assert load.full  # the bytes


def test_live_messages_held_during_a_replay_are_bounded_in_bytes_too() -> None:
    """A client's own publishes during its replay land in ``pending``: a page of bytes at most."""
    sub = Subscription(None, 0, "e")  # type: ignore[arg-type]
    sub.pending = []
    for n in range(1, 40):
        sub.hold(Envelope(None, 0.0, n, "e", b"x" * 60_000), limit=1000, max_bytes=1_000_000)
        assert sub.pending_bytes <= 1_000_000
    assert sub.overflowed  # dropped, to be read from history again
    assert sub.pending_bytes == sum(len(env.frame) for env in sub.pending)


def test_caller_rates_bound_each_caller_to_its_burst_and_refill() -> None:
    rates = CallerRates(rate=2, burst=3)
    assert [rates.admit("ann", now=0) for _ in range(5)] == [True, True, True, False, False]
    assert rates.admit("bob", now=0)  # a bucket of its own
    assert rates.admit("ann", now=0.5)  # one token back after 1/rate seconds
    assert not rates.admit("ann", now=0.5)


def test_caller_rates_keep_at_most_max_callers_dropping_the_least_recent() -> None:
    rates = CallerRates(rate=0, burst=1)
    assert rates.admit("first", now=0)
    for n in range(MAX_CALLERS):
        rates.admit(f"caller-{n}", now=0)
    assert len(rates._buckets) == MAX_CALLERS
    assert rates.admit("first", now=0)  # forgotten, so a fresh bucket: the bound is on memory
    assert not rates.admit(f"caller-{MAX_CALLERS - 1}", now=0)  # still known, and spent
