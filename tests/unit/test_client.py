from __future__ import annotations

import pytest

from switchboard_client.realtime import backoff_delay


@pytest.mark.parametrize("attempt", range(12))
def test_full_jitter_stays_within_the_capped_exponential(attempt: int) -> None:
    ceiling = min(5.0, 0.1 * 2**attempt)
    assert backoff_delay(attempt, 0.1, 5.0, rng=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, 0.1, 5.0, rng=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)
    assert backoff_delay(attempt, 0.1, 5.0) < ceiling


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_delay(10_000, 0.5, 15.0, rng=lambda: 0.5) == 7.5
