from __future__ import annotations

import pytest

from switchboard_client.realtime import backoff_delay, is_terminal


@pytest.mark.parametrize("attempt", range(12))
def test_full_jitter_stays_within_the_capped_exponential(attempt: int) -> None:
    ceiling = min(5.0, 0.1 * 2**attempt)
    assert backoff_delay(attempt, 0.1, 5.0, rng=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, 0.1, 5.0, rng=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)
    assert backoff_delay(attempt, 0.1, 5.0) < ceiling


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_delay(10_000, 0.5, 15.0, rng=lambda: 0.5) == 7.5


@pytest.mark.parametrize(
    ("code", "terminal"),
    [
        (1000, False),
        (1003, True),
        (1008, True),
        (1011, False),
        (1012, False),
        (1013, False),
        (None, False),
        (4000, False),  # slow consumer: this connection only
        (4001, False),  # no pong
        (4002, False),  # token expired: a token function gives a fresh one
        (4003, True),  # the server API's disconnect
        (4004, True),  # the user's connection limit
        (4005, True),  # any other code a disconnect chose
        (4999, True),
    ],
)
def test_server_refusals_and_disconnects_are_terminal(code: int | None, terminal: bool) -> None:
    assert is_terminal(code) is terminal
