"""app/fossil.py: every delta decodes, with a decoder written from the format (tests/fossil_spec.py)
and with centrifuge-python's, to its target; JSON-wire deltas are valid UTF-8; small changes give
small deltas."""

from __future__ import annotations

import random

import orjson
import pytest
from centrifuge.fossil import apply_delta

from app import fossil
from app.protocols import centrifuge_delta
from tests.fossil_spec import apply, spec_checksum


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(6)):
        at = rng.randrange(len(out) + 1)
        out[at : at + rng.randrange(40)] = rng.randbytes(rng.randrange(60))
    return bytes(out)


def both_decode(source: bytes, target: bytes, delta: bytes) -> None:
    assert apply(source, delta) == target
    assert bytes(apply_delta(source, delta)) == target


@pytest.mark.parametrize("seed", range(20))
def test_random_binary_edits_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    source = rng.randbytes(rng.choice([0, 1, 15, 16, 17, 300, 5000]))
    for target in (mutate(rng, source), rng.randbytes(rng.randrange(500)), b"", source, source * 3):
        both_decode(source, target, fossil.encode(source, target))


def test_checksum_matches_the_spec_on_every_tail_length() -> None:
    for size in range(12):
        data = bytes(range(200, 200 + size))
        assert fossil.checksum(data) == spec_checksum(data)
    assert fossil.checksum(b"\xff" * 4096) == spec_checksum(b"\xff" * 4096)  # wraps modulo 2**32


def test_numbers_use_the_formats_base_64_digits() -> None:
    delta = fossil.encode(b"", b"x" * 4096)
    assert delta.startswith(b"100\n100:")  # 4096 = 1*64**2
    assert delta.endswith(b";")


def dashboard(rng: random.Random) -> dict[str, object]:
    return {f"metric_{i}": {"value": rng.random(), "label": f"série ünïcødé {i}"} for i in range(60)}


def test_one_changed_field_of_a_json_state_is_a_small_delta() -> None:
    rng = random.Random(7)
    state = dashboard(rng)
    source = orjson.dumps(state)
    state["metric_30"] = {"value": 0.5, "label": "changed"}
    target = orjson.dumps(state)
    delta = fossil.encode(source, target, utf8=True)
    both_decode(source, target, delta)
    assert len(delta) < len(target) // 20


@pytest.mark.parametrize("seed", range(10))
def test_utf8_deltas_are_valid_utf8_and_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    state = dashboard(rng)
    source = orjson.dumps(state)
    for _ in range(30):
        key = f"metric_{rng.randrange(60)}"
        state[key] = {"value": rng.random(), "label": "é€😀"[: rng.randrange(4)] * rng.randrange(5)}
        target = orjson.dumps(state)
        delta = fossil.encode(source, target, utf8=True)
        text = delta.decode()  # raises if an insert split a character
        both_decode(source, target, text.encode())
        source = target


def test_moved_blocks_are_copied_not_inserted() -> None:
    rng = random.Random(3)
    a, b = rng.randbytes(2000), rng.randbytes(2000)
    delta = fossil.encode(a + b, b + a)
    both_decode(a + b, b + a, delta)
    assert len(delta) < 100


def test_a_long_changed_middle_is_inserted_not_searched() -> None:
    """The walk is bounded (SEARCH_BYTES): past it the delta is no smaller than the target, and
    the caller sends the full publication."""
    rng = random.Random(5)
    source = rng.randbytes(fossil.SEARCH_BYTES * 4)
    target = source[:100] + rng.randbytes(fossil.SEARCH_BYTES + 1) + source[::-1]
    delta = fossil.encode(source, target)
    both_decode(source, target, delta)
    assert len(delta) > fossil.SEARCH_BYTES  # the middle went in as it is


def test_over_the_cap_a_publication_is_full() -> None:
    big = orjson.dumps({"rows": ["x" * 100] * (centrifuge_delta.MAX_DELTA_BYTES // 100)})
    assert centrifuge_delta.delta(big, big + b" ", {}) is None
    small = orjson.dumps({"rows": ["x" * 100] * 40})
    assert centrifuge_delta.delta(small, small.replace(b"x", b"y", 1), {}) is not None
