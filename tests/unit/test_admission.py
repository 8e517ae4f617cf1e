"""The handshake bucket: one second's burst, then the rate, whatever the pattern of arrivals."""

from __future__ import annotations

from app.admission import HandshakeRate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_takes_one_seconds_worth_then_the_rate() -> None:
    clock = Clock()
    rate = HandshakeRate(10, clock=clock)
    assert sum(rate.admit() for _ in range(50)) == 10
    clock.now += 0.5
    assert sum(rate.admit() for _ in range(50)) == 5
    clock.now += 60  # idle for a minute: the bucket holds one second's worth, not sixty
    assert sum(rate.admit() for _ in range(50)) == 10


def test_a_steady_stream_under_the_rate_is_never_refused() -> None:
    clock = Clock()
    rate = HandshakeRate(10, clock=clock)
    for _ in range(1000):
        clock.now += 0.11
        assert rate.admit()


def test_workers_share_the_rate_and_the_burst() -> None:
    clock = Clock()
    shares = [HandshakeRate(10, workers=4, clock=clock) for _ in range(4)]
    assert sum(rate.admit() for rate in shares for _ in range(50)) == 8  # 2.5 each, whole tokens
    clock.now += 2.0
    assert sum(rate.admit() for rate in shares for _ in range(50)) == 8  # capped at 2.5 each again
    clock.now += 0.4
    assert sum(rate.admit() for rate in shares for _ in range(50)) == 4  # 0.5 left + 1.0 each


def test_a_share_under_one_token_still_admits_at_its_rate() -> None:
    clock = Clock()
    rate = HandshakeRate(2, workers=8, clock=clock)  # a quarter of a handshake a second
    assert rate.admit()
    assert not rate.admit()
    clock.now += 3.9
    assert not rate.admit()
    clock.now += 0.2
    assert rate.admit()
