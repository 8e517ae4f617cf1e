"""JWT verification with pinned algorithms, plus the dev-mode token minting.

Tokens are never logged: errors carry a short reason label (also the metrics label), never the token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from app.config import Settings

DEFAULT_NAME = "User"


@dataclass(slots=True, frozen=True)
class Identity:
    user_id: str
    name: str


class AuthError(Exception):
    """``reason`` is a fixed label: missing, expired, bad_signature, bad_algorithm, bad_claims, malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_token(token: str | None, settings: Settings) -> Identity:
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
    name = claims.get("name")
    return Identity(user_id=str(claims["sub"]), name=name if isinstance(name, str) else DEFAULT_NAME)


def mint_token(settings: Settings, sub: str, name: str | None = None, ttl: float = 3600) -> str:
    """Sign a token the way an auth service would; used by /dev/token and the tests."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    if name is not None:
        claims["name"] = name
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithms[0])
