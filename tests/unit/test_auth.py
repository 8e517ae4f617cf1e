from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import orjson
import pytest

from app.auth import Authenticator, AuthError, Identity, mint_token
from app.auth_config import JwksOptions, ProviderConfig
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


@pytest.mark.parametrize(
    "headers",
    [{"crit": ["exp\nPOST /api/v1/disconnect HTTP/1.1 200 OK"]}, {"crit": "b64"}, {"kid": 5}, {"kid": ["a"]}],
)
async def test_crit_and_non_string_kid_headers_get_a_fixed_reason(settings: Settings, headers: dict[str, Any]) -> None:
    """Issue 21 finding 4: these raised out of the verifier (a traceback, 1011 or HTTP 500)."""
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    header = base64.urlsafe_b64encode(orjson.dumps({"alg": "HS256", "typ": "JWT", **headers})).rstrip(b"=")
    forged = header.decode() + token[token.index(".") :]
    assert await reason(forged, settings) == "bad_header"


async def test_an_empty_sub_is_refused_with_the_claim_named(settings: Settings) -> None:
    """Issue 21 finding 17a: ``sub: ""`` connected as anonymous but kept its channels grants."""
    with pytest.raises(AuthError) as info:
        await verify_token(mint_token(settings, "", channels=["team:*"]), settings)
    assert info.value.detail == "bad_claims (sub)"


@pytest.mark.parametrize(
    ("claims", "claim"),
    [({"channels": "team:*"}, "channels"), ({"info": "red"}, "info"), ({"channel": "team:x"}, "channel")],
)
async def test_bad_claims_name_the_claim(settings: Settings, claims: dict[str, Any], claim: str) -> None:
    """Issue 22: a bad_claims refusal says which claim (a name from our list, never the token's text)."""
    with pytest.raises(AuthError) as info:
        await verify_token(mint_token(settings, "u1", **claims), settings)
    assert info.value.detail == f"bad_claims ({claim})"


async def test_the_hook_gets_every_claim_and_a_dotted_channels_claim_is_read() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("S", SECRET)
        provider = ProviderConfig(secret_env="S", channels_claim="authz.channels")
        named = ProviderConfig(secret_env="S", channels_claim="https://example.com/channels")
    now = int(time.time())
    token = jwt.encode(
        {"sub": "u", "exp": now + 60, "authz": {"channels": ["a:*"]}, "https://example.com/channels": ["b:1"]},
        SECRET,
        algorithm="HS256",
    )
    identity = await Authenticator([provider], JwksOptions(), keep_claims=True).verify(token)
    assert identity.channels == ("a:*",)
    assert identity.claims["authz"] == {"channels": ["a:*"]}
    assert (await Authenticator([named], JwksOptions()).verify(token)).channels == ("b:1",)


async def test_providers_with_a_user_prefix_each_keep_their_users_apart() -> None:
    """Two tenants' issuers both say ``sub: alice``: two users, and the subscription token one
    provider mints for its alice does not grant a channel to the other's."""
    other = "o" * 64
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("A", SECRET)
        patch.setenv("B", other)
        providers = [
            ProviderConfig(secret_env="A", issuer="https://a.example", user_prefix="a:"),
            ProviderConfig(secret_env="B", issuer="https://b.example", user_prefix="b:"),
        ]
    auth = Authenticator(providers, JwksOptions())
    exp = int(time.time()) + 60

    def token(iss: str, secret: str, **claims: Any) -> str:
        return jwt.encode({"sub": "alice", "exp": exp, "iss": iss, **claims}, secret, algorithm="HS256")

    assert (await auth.verify(token("https://a.example", SECRET))).user_id == "a:alice"
    assert (await auth.verify(token("https://b.example", other))).user_id == "b:alice"
    from_b = token("https://b.example", other, channel="team:red")
    with pytest.raises(AuthError) as refused:
        await auth.verify_subscription(from_b, "a:alice", "team:red")
    assert refused.value.reason == "wrong_user"
    await auth.verify_subscription(from_b, "b:alice", "team:red")  # its own user's: granted
