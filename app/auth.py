"""Token verification: ``Authenticator.verify(token) -> Identity``, for every provider configured.

A token is matched to its provider by its ``iss`` (a provider without an issuer takes the tokens
no other provider claims), then verified only with that provider's algorithms and keys: a token
naming provider A but signed by B's key fails A's signature check. The header is checked before
any key is looked up: ``alg`` pinned per provider (``none`` never), ``jku``/``x5u``/``x5c``/``jwk``
refused (never followed), ``crit`` and a non-string ``kid`` refused by PyJWT.

Tokens are never logged. Every failure is an AuthError with a reason from ``REASONS`` (also the
metrics label) and, for ``bad_claims``, the claim's name; nothing a client wrote reaches a log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import jwt
import orjson

from app import metrics
from app.auth_config import SUPPORTED_ALGORITHMS, JwksOptions, ProviderConfig
from app.config import Settings
from app.jwks import NoKey, RemoteKeys

log = logging.getLogger("switchboard.auth")

DEFAULT_NAME = "User"
# The `info` claim is shown in presence lists: bounded so that a page of 1000 stays under 4 MB.
MAX_INFO_BYTES = 2048
REASONS = frozenset(
    {
        "missing",
        "malformed",
        "bad_header",
        "bad_algorithm",
        "bad_signature",
        "expired",
        "bad_claims",
        "unknown_issuer",
        "unknown_key",
        "no_keys",
        "wrong_user",
        "wrong_channel",
    }
)
# Headers that point at keys: a verifier that followed them would let the token pick its own key.
KEY_HEADERS = ("jku", "x5u", "x5c", "jwk")
# Refusals logged per second at most: a flood of bad tokens is a counter, not a flood of lines.
LOG_PER_SECOND = 5
for _label in REASONS:
    metrics.AUTH_FAILURES.labels(_label)


@dataclass(slots=True, frozen=True)
class Identity:
    """Who a connection is. The anonymous identity has an empty ``user_id``."""

    user_id: str
    name: str
    # The provider's channels claim: names or ``*`` glob patterns this user is granted.
    channels: tuple[str, ...] = ()
    # The provider's info claim: shown to others in presence and join/leave pushes.
    info: dict[str, Any] | None = None
    expires: int | None = None
    # Every claim of the token, for the hook; kept only when a hook is configured (memory per socket).
    claims: Mapping[str, Any] = field(default_factory=dict)


ANONYMOUS = Identity(user_id="", name="Anonymous")


class AuthError(Exception):
    """``reason`` is one of ``REASONS`` (the metrics label); ``claim`` names a bad claim."""

    def __init__(self, reason: str, claim: str | None = None) -> None:
        assert reason in REASONS, reason
        super().__init__(reason)
        self.reason = reason
        self.claim = claim

    @property
    def detail(self) -> str:
        """What the client and the log are told: the reason, and the claim (a name from our list
        or from configuration, never from the token)."""
        return f"{self.reason} ({self.claim})" if self.claim else self.reason


@dataclass(slots=True)
class _Provider:
    config: ProviderConfig
    remote: RemoteKeys | None

    async def key(self, kid: str | None, alg: str) -> Any:
        if self.remote is not None:
            try:
                return await self.remote.key(kid, alg)
            except NoKey as exc:
                raise AuthError(exc.reason) from None
        if self.config.secret is not None:
            return self.config.secret.get_secret_value()
        return self.config.key


class Authenticator:
    """Verifies tokens for all providers; ``start`` begins the JWKS fetches, ``close`` ends them."""

    def __init__(self, providers: list[ProviderConfig], options: JwksOptions, *, keep_claims: bool = False) -> None:
        self.keep_claims = keep_claims
        self._providers = [
            _Provider(p, RemoteKeys(p.label, options, jwks_url=p.jwks_url, issuer=p.oidc_issuer))
            if p.jwks_url or p.oidc_issuer
            else _Provider(p, None)
            for p in providers
        ]
        self._by_issuer = {p.config.issuer: p for p in self._providers if p.config.issuer}
        # Tokens whose iss no provider claims: the provider without an issuer; with a single
        # provider, that one, so that a wrong iss is refused as bad_claims (iss), which says more.
        self._default = next((p for p in self._providers if not p.config.issuer), None)
        if self._default is None and len(self._providers) == 1:
            self._default = self._providers[0]
        self._tasks: list[asyncio.Task[None]] = []
        self._logged = (0.0, 0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(settings.auth_providers, settings.jwks_options, keep_claims=settings.hook_object is not None)

    async def start(self) -> None:
        for p in self._providers:
            if p.remote is not None:
                self._tasks.append(asyncio.create_task(p.remote.run(), name=f"switchboard-jwks-{p.config.label}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for p in self._providers:
            if p.remote is not None:
                await p.remote.close()

    async def verify(self, token: str | None) -> Identity:
        """A connection token's identity; raises AuthError."""
        claims, provider = await self._claims(token)
        c = provider.config
        if "channel" in claims:  # a subscription token grants one channel, never a connection
            self._refuse(AuthError("bad_claims", "channel"), c)
        channels = _path(claims, c.channels_claim)
        if channels is None:
            channels = []
        if not isinstance(channels, list) or not all(isinstance(ch, str) for ch in channels):
            self._refuse(AuthError("bad_claims", c.channels_claim), c)
        info = claims.get(c.info_claim)
        if info is not None and (not isinstance(info, dict) or len(orjson.dumps(info)) > MAX_INFO_BYTES):
            self._refuse(AuthError("bad_claims", c.info_claim), c)
        name = claims.get(c.name_claim)
        return Identity(
            user_id=self._user(claims, c),
            name=name if isinstance(name, str) and name else DEFAULT_NAME,
            channels=tuple(channels),
            info=info,
            expires=int(claims["exp"]),
            claims=claims if self.keep_claims else {},
        )

    async def verify_subscription(self, token: str, user_id: str, channel: str) -> int | None:
        """A subscription token grants ``channel`` to ``user_id``; raises AuthError (wrong_channel...).
        Returns its ``exp`` (None without one), until which the subscription stands on it."""
        claims, provider = await self._claims(token)
        if self._user(claims, provider.config) != user_id:
            self._refuse(AuthError("wrong_user"), provider.config)
        if claims.get("channel") != channel:
            self._refuse(AuthError("wrong_channel"), provider.config)
        exp = claims.get("exp")
        return int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None

    def _user(self, claims: dict[str, Any], c: ProviderConfig) -> str:
        user = claims.get(c.user_claim)
        # An empty id would be the anonymous identity, but one carrying the token's grants.
        if isinstance(user, bool) or not isinstance(user, str | int) or user == "":
            self._refuse(AuthError("bad_claims", c.user_claim), c)
        return c.user_prefix + str(user)

    async def _claims(self, token: str | None) -> tuple[dict[str, Any], _Provider]:
        if not token:
            raise AuthError("missing")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.DecodeError:
            raise AuthError("malformed") from None
        except jwt.InvalidTokenError:  # crit, a non-string kid: never the library's message
            raise AuthError("bad_header") from None
        except Exception:  # whatever else the library raises on hostile input is still malformed
            raise AuthError("malformed") from None
        alg = header.get("alg")
        if any(name in header for name in KEY_HEADERS):
            raise AuthError("bad_header")
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
            raise AuthError("bad_algorithm")
        iss = unverified.get("iss")
        provider = self._by_issuer.get(iss) if isinstance(iss, str) else None
        provider = provider or self._default
        if provider is None:
            raise AuthError("unknown_issuer")
        c = provider.config
        if alg not in c.algorithms:
            self._refuse(AuthError("bad_algorithm"), c)
        try:
            key = await provider.key(header.get("kid"), alg)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=c.audience,
                issuer=c.issuer,
                # RSA keys under 2048 bits are refused; HMAC secrets were checked at start-up.
                options={"require": ["exp", c.user_claim], "enforce_minimum_key_length": not c.hmac},
            )
        except AuthError as exc:
            self._refuse(exc, c)
        except jwt.PyJWTError as exc:
            self._refuse(_reason(exc), c)
        except Exception:
            self._refuse(AuthError("malformed"), c)
        if not isinstance(claims.get("exp"), int | float) or isinstance(claims["exp"], bool):
            self._refuse(AuthError("bad_claims", "exp"), c)
        return claims, provider

    def _refuse(self, exc: AuthError, c: ProviderConfig) -> NoReturn:
        now = time.monotonic()
        second, count = self._logged
        if now - second >= 1:
            second, count = now, 0
        if count < LOG_PER_SECOND:
            log.info("token refused: %s (provider %s)", exc.detail, c.label)
        self._logged = (second, count + 1)
        raise exc


def _reason(exc: jwt.PyJWTError) -> AuthError:
    """A fixed reason for every PyJWT exception; the claim, where there is one, from our list."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthError("expired")
    if isinstance(exc, jwt.InvalidSignatureError):
        return AuthError("bad_signature")
    if isinstance(exc, jwt.InvalidAlgorithmError | jwt.InvalidKeyError):
        return AuthError("bad_algorithm")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthError("bad_claims", exc.claim)
    claims = (
        (jwt.InvalidAudienceError, "aud"),
        (jwt.InvalidIssuerError, "iss"),
        (jwt.ImmatureSignatureError, "nbf"),
        (jwt.InvalidIssuedAtError, "iat"),
    )
    for kind, claim in claims:
        if isinstance(exc, kind):
            return AuthError("bad_claims", claim)
    return AuthError("malformed")


def _path(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by dotted path; a claim named by the whole path (a URL, say) wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def mint_token(settings: Settings, sub: str, name: str | None = None, ttl: float = 3600, **extra: Any) -> str:
    """Sign a token with ``SWITCHBOARD_JWT_SECRET``, as an auth service would; /dev/token and tests.

    ``extra`` claims: ``channels``, ``info``, or ``channel`` for a subscription token.
    """
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "iat": now, "exp": now + int(ttl), **extra}
    if name is not None:
        claims["name"] = name
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=settings.hmac_algorithm)
