"""Batched hot-path metrics expose exactly what direct updates would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.metrics import BatchedCounter, BatchedHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0, 0.0005, 0.001, 0.002, 0.01, 0.05, 0.5, 1.0, 3.0, 7.5]


def exposition(metric_name: str, direct: bool) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram(metric_name, "h", buckets=BUCKETS, registry=registry)
    counter = Counter(metric_name + "_events", "c", registry=registry)
    if direct:
        for value in VALUES:
            histogram.observe(value)
            counter.inc(2)
    else:
        batched, events = BatchedHistogram(histogram), BatchedCounter(counter)
        for value in VALUES[:4]:
            batched.observe(value)
            events.inc(2)
        batched.flush()
        events.flush()
        for value in VALUES[4:]:
            batched.observe(value)
            events.inc(2)
        batched.flush()
        events.flush()
        batched.flush()  # a flush with nothing pending changes nothing
    return generate_latest(registry)


def samples(direct: bool) -> dict[str, float]:
    text = exposition("switchboard_test", direct).decode()
    lines = [line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {name: float(value) for name, value in lines if "_created" not in name}


def test_batched_equals_direct() -> None:
    direct, batched = samples(True), samples(False)
    assert batched.keys() == direct.keys()
    for name, value in direct.items():
        # Sums are added in a different order, so only they may differ, in the last bits.
        assert batched[name] == (pytest.approx(value) if name.endswith("_sum") else value), name


def test_nothing_is_visible_before_a_flush() -> None:
    registry = CollectorRegistry()
    counter = Counter("switchboard_pending", "c", registry=registry)
    batched = BatchedCounter(counter)
    batched.inc(5)
    assert registry.get_sample_value("switchboard_pending_total") == 0
    batched.flush()
    assert registry.get_sample_value("switchboard_pending_total") == 5


def test_client_chosen_close_codes_are_bucketed_not_new_series() -> None:
    from app.connection import KNOWN_CODES
    from app.metrics import close_code_label

    assert close_code_label(4000, KNOWN_CODES) == "4000"  # ours: slow consumer
    assert close_code_label(1001, KNOWN_CODES) == "1001"  # RFC 6455's
    labels = {close_code_label(code, KNOWN_CODES) for code in range(3000, 5000) if code not in KNOWN_CODES}
    assert labels == {"3xxx", "4xxx"}
    assert close_code_label(65535, KNOWN_CODES) == "other"
