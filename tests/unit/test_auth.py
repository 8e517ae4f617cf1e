from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from app.auth import AuthError, mint_token, verify_token
from app.config import Settings

SECRET = "k" * 64  # long enough for HS512 too


@pytest.fixture
def settings() -> Settings:
    return Settings(jwt_secret=SECRET)


def reason(token: str | None, settings: Settings) -> str:
    with pytest.raises(AuthError) as info:
        verify_token(token, settings)
    return info.value.reason


def test_valid_token_gives_sub_and_name(settings: Settings) -> None:
    identity = verify_token(mint_token(settings, "u1", "Ann"), settings)
    assert (identity.user_id, identity.name) == ("u1", "Ann")


def test_name_defaults_to_user(settings: Settings) -> None:
    assert verify_token(mint_token(settings, "u1"), settings).name == "User"


def test_missing_and_garbage_tokens(settings: Settings) -> None:
    assert reason(None, settings) == "missing"
    assert reason("", settings) == "missing"
    assert reason("not-a-jwt", settings) == "malformed"


def test_expired_token(settings: Settings) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) - 5}, SECRET, algorithm="HS256")
    assert reason(token, settings) == "expired"


def test_wrong_signature(settings: Settings) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "z" * 48, algorithm="HS256")
    assert reason(token, settings) == "bad_signature"


def test_none_algorithm_is_refused(settings: Settings) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert reason(token, settings) == "bad_algorithm"


def test_algorithm_outside_the_pinned_list_is_refused(settings: Settings) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512")
    assert reason(token, settings) == "bad_algorithm"


def test_required_claims(settings: Settings) -> None:
    no_exp = jwt.encode({"sub": "u"}, SECRET, algorithm="HS256")
    no_sub = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert reason(no_exp, settings) == "bad_claims"
    assert reason(no_sub, settings) == "bad_claims"


def test_audience_and_issuer_are_checked() -> None:
    settings = Settings(jwt_secret=SECRET, jwt_audience="switchboard", jwt_issuer="https://auth.example")
    assert verify_token(mint_token(settings, "u"), settings).user_id == "u"
    other = jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "aud": "else"}, SECRET, algorithm="HS256")
    assert reason(other, settings) == "bad_claims"


def test_claims_channels_info_and_expiry_are_read(settings: Settings) -> None:
    token = mint_token(settings, "u1", "Ann", channels=["team:*"], info={"color": "red"})
    identity = verify_token(token, settings)
    assert identity.channels == ("team:*",)
    assert identity.info == {"color": "red"}
    assert identity.expires is not None
    assert identity.expires > time.time()


@pytest.mark.parametrize(
    "claims",
    [
        {"channels": "team:*"},  # not a list
        {"channels": [1]},
        {"info": "red"},  # not an object
        {"info": {"pad": "x" * 3000}},  # over MAX_INFO_BYTES: presence pages stay bounded
        {"channel": "team:x"},  # a subscription token is never a connection token
    ],
)
def test_malformed_claims_are_refused(settings: Settings, claims: dict[str, Any]) -> None:
    assert reason(mint_token(settings, "u1", "Ann", **claims), settings) == "bad_claims"
