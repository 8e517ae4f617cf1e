from __future__ import annotations

import pytest

from app.auth_config import JwksOptions
from app.jwks import FetchFailed, max_age, usable_entries

OPTIONS = JwksOptions(min_refresh=30, cache_ttl=300, max_ttl=3600)
RSA = {"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB"}


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        (None, 300),  # no header: SWITCHBOARD_JWKS_CACHE_TTL
        ("public, max-age=600", 600),
        ("max-age=5", 30),  # never under SWITCHBOARD_JWKS_MIN_REFRESH
        ("max-age=999999", 3600),  # never over SWITCHBOARD_JWKS_MAX_TTL
        ("no-store", 300),
    ],
)
def test_max_age_is_clamped(header: str | None, ttl: float) -> None:
    assert max_age(header, OPTIONS) == ttl


def test_private_symmetric_and_odd_entries_are_refused() -> None:
    document = {
        "keys": [
            RSA,
            {**RSA, "kid": "private", "d": "secret"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**RSA, "kid": "enc", "use": "enc"},
            {**RSA, "kid": 5},
            "not a key",
        ]
    }
    assert list(usable_entries(document, "test")) == ["a"]


@pytest.mark.parametrize("document", [{"keys": "x"}, [], {"no": "keys"}])
def test_a_document_that_is_no_key_set_is_invalid(document: object) -> None:
    with pytest.raises(FetchFailed) as info:
        usable_entries(document, "test")
    assert info.value.result == "invalid"
