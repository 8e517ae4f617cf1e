"""JWT verification with pinned algorithms, plus the dev-mode token minting.

Tokens are never logged: errors carry a short reason label (also the metrics label), never the token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from app.config import Settings

DEFAULT_NAME = "User"
# The `info` claim is shown in presence lists: bounded so that a page of 1000 stays under 4 MB.
MAX_INFO_BYTES = 2048


@dataclass(slots=True, frozen=True)
class Identity:
    """Who a connection is. The anonymous identity has an empty ``user_id``."""

    user_id: str
    name: str
    # The JWT's ``channels`` claim: names or ``*`` glob patterns this user is granted.
    channels: tuple[str, ...] = ()
    # The JWT's ``info`` claim: shown to others in presence and join/leave pushes.
    info: dict[str, Any] | None = None
    expires: int | None = None


ANONYMOUS = Identity(user_id="", name="Anonymous")


class AuthError(Exception):
    """``reason`` is a fixed label (also the metrics label): missing, expired, bad_signature,
    bad_algorithm, bad_claims, malformed; for subscription tokens also wrong_user, wrong_channel."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_token(token: str | None, settings: Settings) -> Identity:
    claims = decode(token, settings)
    name = claims.get("name")
    channels = claims.get("channels", [])
    info = claims.get("info")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise AuthError("bad_claims")
    if info is not None and (not isinstance(info, dict) or len(orjson.dumps(info)) > MAX_INFO_BYTES):
        raise AuthError("bad_claims")
    if "channel" in claims:  # a subscription token grants one channel, never a connection
        raise AuthError("bad_claims")
    return Identity(
        user_id=str(claims["sub"]),
        name=name if isinstance(name, str) else DEFAULT_NAME,
        channels=tuple(channels),
        info=info,
        expires=int(claims["exp"]),
    )


def verify_subscription_token(token: str, settings: Settings, user_id: str, channel: str) -> None:
    """A subscription token grants ``channel`` to ``user_id``. Raises AuthError ("wrong_channel"...)."""
    claims = decode(token, settings)
    if str(claims["sub"]) != user_id:
        raise AuthError("wrong_user")
    if claims.get("channel") != channel:
        raise AuthError("wrong_channel")


def decode(token: str | None, settings: Settings) -> dict[str, Any]:
    """Verify signature, algorithm, ``exp``, ``sub`` (and ``aud``/``iss`` when set); the claims."""
    if not token:
        raise AuthError("missing")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise AuthError("malformed") from None
    # PyJWT would reject these too; checking first gives "alg: none" its own failure label.
    if header.get("alg") not in settings.jwt_algorithms:
        raise AuthError("bad_algorithm")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=settings.jwt_algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad_signature") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("bad_algorithm") from None
    except (
        jwt.MissingRequiredClaimError,
        jwt.InvalidAudienceError,
        jwt.InvalidIssuerError,
        jwt.ImmatureSignatureError,
    ):
        raise AuthError("bad_claims") from None
    except jwt.InvalidTokenError:
        raise AuthError("malformed") from None
    if not isinstance(claims.get("exp"), int | float):
        raise AuthError("bad_claims")
    return claims


def mint_token(settings: Settings, sub: str, name: str | None = None, ttl: float = 3600, **extra: Any) -> str:
    """Sign a token the way an auth service would; used by /dev/token and the tests.

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
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithms[0])
