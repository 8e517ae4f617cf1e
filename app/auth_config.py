"""Who may issue tokens: the providers, from ``SWITCHBOARD_*`` settings and ``[[auth.providers]]``.

A provider is an issuer (``iss``) with its own audience, algorithms, key source and claim mapping.
Exactly one key source each: an HMAC secret (read from an environment variable, never from the
file), a PEM public key, a JWKS URL, or an OIDC issuer (discovery finds its JWKS). HMAC and
asymmetric algorithms never share a provider: a verifier that accepts both is the classic
algorithm-confusion hole (an HS256 token "signed" with the RSA public key as its secret).

Pure data and checks: importing this module starts nothing, and it never touches app.metrics
(gunicorn's master loads the settings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_CURVES) | {"EdDSA"}
# "none" is never accepted, whatever a provider lists.
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
MIN_SECRET_BYTES = 32
# Secrets that appear in docs and examples; refusing them catches copy-paste deployments.
KNOWN_WEAK_SECRETS = frozenset({"secret", "changeme", "change-me", "your-secret-key"})
DISCOVERY_PATH = "/.well-known/openid-configuration"
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class JwksOptions:
    """How JWKS keys are cached (the SWITCHBOARD_JWKS_* settings; app/jwks.py)."""

    min_refresh: float = 30.0
    cache_ttl: float = 300.0
    max_ttl: float = 3600.0
    max_stale: float = 86400.0
    timeout: float = 5.0


def check_algorithms(value: list[str]) -> list[str]:
    """Known, not empty, and not HMAC beside asymmetric; raises ValueError with one line."""
    unsupported = [alg for alg in value if alg not in SUPPORTED_ALGORITHMS]
    if unsupported or not value:
        raise ValueError(
            f"unsupported JWT algorithms {unsupported or value}; choose from {sorted(SUPPORTED_ALGORITHMS)}"
        )
    hmac_algs = [alg for alg in value if alg in HMAC_ALGORITHMS]
    if hmac_algs and len(hmac_algs) != len(value):
        raise ValueError(
            f"algorithms {value} mix HMAC ({', '.join(hmac_algs)}) with asymmetric ones in one provider: "
            "that is how a token signed with the public key as an HMAC secret gets in; declare two providers"
        )
    return value


def check_secret(secret: str, where: str) -> None:
    if secret.lower() in KNOWN_WEAK_SECRETS or len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{where} is a default or shorter than {MIN_SECRET_BYTES} bytes; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )


def key_fits(key: object, alg: str) -> bool:
    """The key type an algorithm needs: RSA for RS/PS, the named curve for ES, Ed25519 for EdDSA."""
    if alg in RSA_ALGORITHMS:
        return isinstance(key, rsa.RSAPublicKey)
    if alg in EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == EC_CURVES[alg]
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey)
    return False


def load_public_key(value: str, algorithms: list[str], where: str) -> object:
    """A PEM public key, inline or from a file; refuses private keys and keys that fit no algorithm."""
    text = value if "-----BEGIN" in value else _read(Path(value), where)
    if "PRIVATE KEY" in text:
        raise ValueError(f"{where} holds a private key; give the public key only (openssl pkey -pubout)")
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError(f"{where} is not a PEM public key") from None
    misfits = [alg for alg in algorithms if not key_fits(key, alg)]
    if misfits:
        raise ValueError(f"{where}: a {type(key).__name__.lstrip('_')} does not verify {', '.join(misfits)}")
    return key


def _read(path: Path, where: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}") from None


def check_url(value: str) -> str:
    """An https URL (http only to a loopback address: keys fetched in the clear could be anyone's),
    kept as written: an issuer's trailing slash is part of its ``iss`` (Auth0's)."""
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    if value.startswith("http://") and urlsplit(value).hostname not in LOOPBACK:
        raise ValueError("must be https (http only to localhost): keys fetched in the clear could be anyone's")
    return value


class ClaimMapping(BaseModel):  # not frozen: ProviderConfig's checks fill in defaults
    """Which claims say who the user is. ``channels_claim`` is a dotted path into the claims, but
    a claim whose name is the whole path (``https://example.com/channels``) is taken first."""

    model_config = ConfigDict(extra="forbid")

    user_claim: str = "sub"
    name_claim: str = "name"
    channels_claim: str = "channels"
    info_claim: str = "info"


class ProviderConfig(ClaimMapping):
    """One ``[[auth.providers]]`` table (or the provider the ``SWITCHBOARD_JWT_*`` settings make)."""

    name: str = Field(default="", max_length=64)
    # Put before every user id this provider's tokens give. Providers share one space of user ids
    # by default (a backend minting tokens for the identity provider's users); providers whose
    # users are different people (two tenants' issuers) each take a prefix, so that the same
    # ``sub`` from both is two users, and one's subscription token is not the other's.
    user_prefix: str = Field(default="", max_length=32, pattern=r"^[!-~]*$")
    # Pinned ``iss``; a provider without one takes tokens whose ``iss`` no other provider claims.
    issuer: str | None = None
    audience: str | None = None
    algorithms: list[str] = []
    # Key sources: exactly one.
    secret_env: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    oidc_issuer: str | None = None
    # Filled in by the checks, never from the file: the secret's value and the loaded PEM key.
    _secret: SecretStr | None = PrivateAttr(default=None)
    _key: object = PrivateAttr(default=None)

    @field_validator("jwks_url", "oidc_issuer")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @model_validator(mode="after")
    def _one_key_source(self, info: ValidationInfo) -> ProviderConfig:
        where = f"provider {self.name!r}" if self.name else "provider"
        sources = [k for k in ("secret_env", "public_key", "jwks_url", "oidc_issuer") if getattr(self, k)]
        if len(sources) != 1:
            raise ValueError(f"{where}: give exactly one key source of secret_env, public_key, jwks_url, oidc_issuer")
        hmac = sources == ["secret_env"]
        if not self.algorithms:
            self.algorithms = ["HS256"] if hmac else ["RS256"]
        check_algorithms(self.algorithms)
        if hmac != (self.algorithms[0] in HMAC_ALGORITHMS):
            kind = "an HMAC secret" if hmac else "a public key source"
            raise ValueError(f"{where}: {kind} cannot verify {', '.join(self.algorithms)}")
        if self.oidc_issuer:
            if self.issuer and self.issuer != self.oidc_issuer:
                raise ValueError(f"{where}: issuer differs from oidc_issuer (discovery pins iss to it)")
            self.issuer = self.oidc_issuer
        given = (info.context or {}).get("secret")  # the settings' own secret, already checked
        if self.secret_env and isinstance(given, SecretStr):
            self._secret = given
        elif self.secret_env:
            secret = os.environ.get(self.secret_env, "")
            if not secret:
                raise ValueError(f"{where}: secret_env names {self.secret_env}, which is not set")
            check_secret(secret, self.secret_env)
            self._secret = SecretStr(secret)
        if self.public_key:
            self._key = load_public_key(self.public_key, self.algorithms, f"{where}: public_key")
        return self

    @property
    def secret(self) -> SecretStr | None:
        return self._secret

    @property
    def key(self) -> object:
        return self._key

    @property
    def hmac(self) -> bool:
        return self.algorithms[0] in HMAC_ALGORITHMS

    @property
    def label(self) -> str:
        return self.name or self.issuer or "default"


class AuthSection(BaseModel):
    """The file's ``[auth]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[ProviderConfig] = []


def check_providers(providers: list[ProviderConfig]) -> list[ProviderConfig]:
    """Each issuer once, and at most one provider without an issuer; raises ValueError."""
    issuers = [p.issuer for p in providers if p.issuer]
    duplicated = sorted({i for i in issuers if issuers.count(i) > 1})
    if duplicated:
        raise ValueError(f"issuer {duplicated[0]} is declared by two providers; a token's iss must pick one")
    if len(providers) - len(issuers) > 1:
        raise ValueError("more than one provider has no issuer: give each an issuer, so a token's iss picks one")
    return providers


@dataclass(frozen=True, slots=True)
class EnvProvider:
    """The provider the ``SWITCHBOARD_JWT_*`` settings make: a secret, or one key source."""

    secret: SecretStr
    algorithms: list[str]
    issuer: str | None
    audience: str | None
    public_key: str | None
    jwks_url: str | None
    oidc_issuer: str | None

    def key_sources(self) -> list[str]:
        """The key-source settings that are set; raises ValueError when they clash."""
        names = ("public_key", "jwks_url", "oidc_issuer")
        found = [f"SWITCHBOARD_{'JWT_' if n == 'public_key' else ''}{n.upper()}" for n in names if getattr(self, n)]
        if len(found) > 1:
            raise ValueError(f"both {found[0]} and {found[1]} are set: the SWITCHBOARD_JWT_* provider takes one")
        if found and self.secret.get_secret_value():
            raise ValueError(
                f"SWITCHBOARD_JWT_SECRET and {found[0]} are both set: one provider cannot mix HMAC with "
                "asymmetric keys; declare two [[auth.providers]] in SWITCHBOARD_CONFIG (docs/auth.md)"
            )
        return found

    def providers(self, secret: SecretStr) -> list[ProviderConfig]:
        """None, or the one provider (``secret``: the settings' secret, perhaps generated in dev mode)."""
        if not secret.get_secret_value() and not self.key_sources():
            return []
        fields: dict[str, object] = {
            "name": "env",
            "issuer": self.issuer,
            "audience": self.audience,
            "algorithms": self.algorithms,
        }
        if secret.get_secret_value():
            fields["secret_env"] = "SWITCHBOARD_JWT_SECRET"
        else:
            fields |= {"public_key": self.public_key, "jwks_url": self.jwks_url, "oidc_issuer": self.oidc_issuer}
        try:
            return [ProviderConfig.model_validate(fields, context={"secret": secret})]
        except ValidationError as exc:
            message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ValueError(message.replace("provider 'env'", "SWITCHBOARD_JWT_*")) from None
