"""Admin sign-in (app/admin_auth.py), its settings, and the cluster queries' merge and rate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.admin_auth import FAILURES, WINDOW, AdminKeys, SignInLimiter
from app.broker import HistoryOptions
from app.channel_state import RATE_WINDOW, Channel
from app.cluster_query import merge_channels
from app.config import Settings
from app.namespaces import Namespaces

STRONG = "x" * 40
PASSWORD = "admin-password-0123456789-abcdefghijklmnop"


def test_the_limiter_refuses_after_the_bound_until_the_oldest_failure_ages_out() -> None:
    limiter = SignInLimiter()
    for n in range(FAILURES):
        assert limiter.retry_after("10.0.0.1", now=100.0 + n) == 0
        limiter.failed("10.0.0.1", now=100.0 + n)
    assert limiter.retry_after("10.0.0.1", now=105.0) == pytest.approx(WINDOW - 5)
    assert limiter.retry_after("10.0.0.2", now=105.0) == 0  # per address
    assert limiter.retry_after("10.0.0.1", now=100.0 + WINDOW) == 0  # the first failure aged out
    limiter.succeeded("10.0.0.1")
    assert len(limiter) == 0


def test_the_limiter_remembers_a_bounded_number_of_addresses() -> None:
    limiter = SignInLimiter(max_clients=100)
    for n in range(10_000):
        limiter.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", now=1.0)
    assert len(limiter) == 100
    # The most recent are kept; each holds at most FAILURES times, however often it fails.
    for _ in range(50):
        limiter.failed("10.0.39.15", now=2.0)
    assert limiter.retry_after("10.0.39.15", now=2.0) > 0
    assert len(limiter._seen["10.0.39.15"]) == FAILURES


def test_sessions_are_signed_expire_and_die_with_the_password() -> None:
    keys = AdminKeys(PASSWORD, ttl=60)
    session, cookie = keys.issue("ops-alice", now=1000.0)
    assert keys.verify(cookie, now=1059.0) == session
    assert keys.verify(cookie, now=1061.0) is None  # expired
    payload, mac = cookie.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    assert keys.verify(f"{forged}.{mac}", now=1001.0) is None
    assert keys.verify(cookie + "x", now=1001.0) is None
    assert keys.verify("", now=1001.0) is None
    assert AdminKeys(PASSWORD + "!", ttl=60).verify(cookie, now=1001.0) is None
    assert keys.password_ok(PASSWORD)
    assert not keys.password_ok(PASSWORD[:-1])


def test_csrf_tokens_are_per_session() -> None:
    keys = AdminKeys(PASSWORD, ttl=60)
    one, _ = keys.issue("ops-alice")
    two, _ = keys.issue("ops-alice")
    assert keys.csrf_ok(one, keys.csrf(one))
    assert not keys.csrf_ok(one, keys.csrf(two))
    assert not keys.csrf_ok(one, None)
    assert not keys.csrf_ok(one, "")


def test_the_admin_ui_is_off_by_default_and_needs_its_own_strong_password() -> None:
    assert Settings(jwt_secret=STRONG).admin is False
    with pytest.raises(ValidationError, match="SWITCHBOARD_ADMIN_PASSWORD is empty"):
        Settings(jwt_secret=STRONG, admin=True)
    with pytest.raises(ValidationError, match="SWITCHBOARD_ADMIN_PASSWORD is a default or shorter"):
        Settings(jwt_secret=STRONG, admin=True, admin_password="hunter2")
    with pytest.raises(ValidationError, match="must differ from every API key and the JWT secret"):
        Settings(jwt_secret=STRONG, admin=True, admin_password=STRONG)
    with pytest.raises(ValidationError, match="must differ from every API key and the JWT secret"):
        Settings(jwt_secret=STRONG, api_keys=[PASSWORD], admin=True, admin_password=PASSWORD)
    assert Settings(dev_mode=True, admin=True, admin_password="dev").admin  # weak is fine in dev mode
    assert Settings(jwt_secret=STRONG, admin=True, admin_password=PASSWORD).admin


def test_merged_channels_add_subscribers_and_take_the_highest_rate() -> None:
    a = [{"channel": "x", "subscribers": 3, "rate": 2.0}, {"channel": "y", "subscribers": 1, "rate": 9.0}]
    b = [{"channel": "x", "subscribers": 4, "rate": 2.5}]
    assert merge_channels([a, b], "subscribers", 10) == [
        {"channel": "x", "subscribers": 7, "rate": 2.5},
        {"channel": "y", "subscribers": 1, "rate": 9.0},
    ]
    assert [r["channel"] for r in merge_channels([a, b], "rate", 10)] == ["y", "x"]
    assert len(merge_channels([a, b], "rate", 1)) == 1


def test_a_channels_rate_counts_the_last_one_to_two_windows() -> None:
    options = Namespaces(None, HistoryOptions()).known("x")
    assert options is not None
    ch = Channel("x", options)
    start = 100 * RATE_WINDOW
    for n in range(10):
        ch.count_publication(start + n * 0.1)
    assert ch.rate(start + 1) == pytest.approx(10 / (RATE_WINDOW + 1))
    assert ch.rate(start + RATE_WINDOW + 5) == pytest.approx(10 / (RATE_WINDOW + 5))  # the next window
    assert ch.rate(start + 2 * RATE_WINDOW) == 0  # two windows on: nothing recent
    ch.count_publication(start + 3 * RATE_WINDOW)  # after a gap, the old count is not carried
    assert ch.rate(start + 3 * RATE_WINDOW) == pytest.approx(1 / RATE_WINDOW)
