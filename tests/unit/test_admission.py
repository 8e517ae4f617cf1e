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
    rate = HandshakeRate(10, clock)
    assert sum(rate.admit() for _ in range(50)) == 10
    clock.now += 0.5
    assert sum(rate.admit() for _ in range(50)) == 5
    clock.now += 60  # idle for a minute: the bucket holds one second's worth, not sixty
    assert sum(rate.admit() for _ in range(50)) == 10


def test_a_steady_stream_under_the_rate_is_never_refused() -> None:
    clock = Clock()
    rate = HandshakeRate(10, clock)
    for _ in range(1000):
        clock.now += 0.11
        assert rate.admit()
