from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from app.auth import Authenticator, AuthError, Identity, mint_token
from app.config import Settings

SECRET = "k" * 64  # long enough for HS512 too


@pytest.fixture
def settings() -> Settings:
    return Settings(jwt_secret=SECRET)


async def verify_token(token: str | None, settings: Settings) -> Identity:
    return await Authenticator.from_settings(settings).verify(token)


async def reason(token: str | None, settings: Settings) -> str:
    with pytest.raises(AuthError) as info:
        await verify_token(token, settings)
    return info.value.reason


async def test_valid_token_gives_sub_and_name(settings: Settings) -> None:
    identity = await verify_token(mint_token(settings, "u1", "Ann"), settings)
    assert (identity.user_id, identity.name) == ("u1", "Ann")


async def test_name_defaults_to_user(settings: Settings) -> None:
    assert (await verify_token(mint_token(settings, "u1"), settings)).name == "User"


async def test_missing_and_garbage_tokens(settings: Settings) -> None:
    assert await reason(None, settings) == "missing"
    assert await reason("", settings) == "missing"
    assert await reason("not-a-jwt", settings) == "malformed"


async def test_expired_token(settings: Settings) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) - 5}, SECRET, algorithm="HS256")
    assert await reason(token, settings) == "expired"


async def test_wrong_signature(settings: Settings) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "z" * 48, algorithm="HS256")
    assert await reason(token, settings) == "bad_signature"


async def test_none_algorithm_is_refused(settings: Settings) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "", algorithm="none")
    assert await reason(token, settings) == "bad_algorithm"


async def test_algorithm_outside_the_pinned_list_is_refused(settings: Settings) -> None:
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512")
    assert await reason(token, settings) == "bad_algorithm"


async def test_required_claims(settings: Settings) -> None:
    no_exp = jwt.encode({"sub": "u"}, SECRET, algorithm="HS256")
    no_sub = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert await reason(no_exp, settings) == "bad_claims"
    assert await reason(no_sub, settings) == "bad_claims"


async def test_audience_and_issuer_are_checked() -> None:
    settings = Settings(jwt_secret=SECRET, jwt_audience="switchboard", jwt_issuer="https://auth.example")
    assert (await verify_token(mint_token(settings, "u"), settings)).user_id == "u"
    other = jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "aud": "else"}, SECRET, algorithm="HS256")
    assert await reason(other, settings) == "bad_claims"


async def test_claims_channels_info_and_expiry_are_read(settings: Settings) -> None:
    token = mint_token(settings, "u1", "Ann", channels=["team:*"], info={"color": "red"})
    identity = await verify_token(token, settings)
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
async def test_malformed_claims_are_refused(settings: Settings, claims: dict[str, Any]) -> None:
    assert await reason(mint_token(settings, "u1", "Ann", **claims), settings) == "bad_claims"
