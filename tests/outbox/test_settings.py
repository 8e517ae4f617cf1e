"""The outbox's settings: the idempotency TTL must outlive the relay's worst retry, the DSN is a
secret and a PostgreSQL URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings, settings_error_line
from app.outbox.relay import where
from tests.support import TEST_SECRET

DSN = "postgresql://shop:hunter2-secret@db.internal:6432/shop"


def test_start_up_refuses_a_ttl_shorter_than_the_worst_retry() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(jwt_secret=TEST_SECRET, outbox_url=DSN, idempotency_ttl=40)  # worst: 10 + 1 + 30
    line = settings_error_line(caught.value)
    assert "SWITCHBOARD_IDEMPOTENCY_TTL (40 s) must outlive the outbox relay's worst retry delay (41 s" in line
    assert "hunter2" not in line
    ok = Settings(jwt_secret=TEST_SECRET, outbox_url=DSN, idempotency_ttl=42)
    assert ok.outbox_worst_retry == 41
    # Without an outbox there is no retry to outlive.
    assert Settings(jwt_secret=TEST_SECRET, idempotency_ttl=5).outbox_url is None


def test_the_dsn_is_a_secret_and_a_postgresql_url() -> None:
    settings = Settings(jwt_secret=TEST_SECRET, outbox_url=DSN)
    assert "hunter2" not in repr(settings)
    assert where(DSN) == "db.internal:6432/shop"
    assert Settings(jwt_secret=TEST_SECRET, outbox_url="").outbox_url is None
    with pytest.raises(ValidationError) as caught:
        Settings(jwt_secret=TEST_SECRET, outbox_url="mysql://u:hunter2@h/db")
    assert "must be a postgresql:// URL" in settings_error_line(caught.value)
    assert "hunter2" not in settings_error_line(caught.value)


def test_a_dsn_libpq_cannot_parse_is_refused_without_quoting_it() -> None:
    """libpq's own message for a bad %-escape quotes the password; start-up says it in its own words."""
    with pytest.raises(ValidationError) as caught:
        Settings(jwt_secret=TEST_SECRET, outbox_url="postgresql://shop:hunter2%zz@db.internal/shop")
    line = settings_error_line(caught.value)
    assert "not a valid PostgreSQL connection URL" in line
    assert "hunter2" not in line
