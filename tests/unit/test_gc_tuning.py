"""app/gc_tuning.py: start-up objects frozen, young collections less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app import gc_tuning


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_tune_freezes_what_is_alive_and_raises_only_the_young_threshold() -> None:
    gc.set_threshold(700, 10, 10)
    gc_tuning.tune(20000)
    assert gc.get_threshold() == (20000, 10, 10)
    assert gc.get_freeze_count() > 1000  # this test process's modules, at least


def test_zero_keeps_the_interpreter_threshold() -> None:
    gc.set_threshold(700, 10, 10)
    gc_tuning.tune(0)
    assert gc.get_threshold() == (700, 10, 10)
