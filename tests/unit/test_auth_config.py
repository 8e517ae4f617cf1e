"""Start-up refuses every invalid provider combination with one line that names it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import ValidationError

from app.config import Settings, settings_error_line

STRONG = "x" * 40
JWKS = "https://idp.example/jwks.json"


def public_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> str:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def refusal(**fields: object) -> str:
    with pytest.raises(ValidationError) as info:
        Settings(**fields)  # type: ignore[arg-type]
    line = settings_error_line(info.value)
    assert "\n" not in line
    return line


def test_only_asymmetric_providers_need_no_secret_outside_dev_mode() -> None:
    settings = Settings(jwks_url=JWKS)
    assert [(p.name, p.algorithms, p.jwks_url) for p in settings.auth_providers] == [("env", ["RS256"], JWKS)]
    assert not settings.generated_secret


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"jwks_url": JWKS, "jwt_algorithms": ["RS256", "HS256"]}, "mix HMAC (HS256) with asymmetric ones"),
        ({"jwks_url": JWKS, "jwt_public_key": "x"}, "both SWITCHBOARD_JWT_PUBLIC_KEY and SWITCHBOARD_JWKS_URL"),
        ({"jwks_url": JWKS, "jwt_secret": STRONG}, "SWITCHBOARD_JWT_SECRET and SWITCHBOARD_JWKS_URL are both set"),
        ({"oidc_issuer": "idp.example"}, "must be an http(s) URL"),
        ({"jwks_url": "http://idp.example/jwks.json"}, "must be https (http only to localhost)"),
        ({"jwks_url": JWKS, "jwt_algorithms": ["HS256"]}, "a public key source cannot verify HS256"),
        ({"jwt_secret": STRONG, "jwt_algorithms": ["ES256"]}, "an HMAC secret cannot verify ES256"),
        ({"jwks_url": JWKS, "jwt_algorithms": ["none"]}, "unsupported JWT algorithms ['none']"),
    ],
)
def test_invalid_environment_combinations(fields: dict[str, object], expected: str) -> None:
    assert expected in refusal(**fields)


def test_pem_keys_are_public_and_fit_their_algorithms(tmp_path: Path) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "key.pem"
    path.write_text(public_pem(ed))
    assert Settings(jwt_public_key=str(path), jwt_algorithms=["EdDSA"]).auth_providers[0].key is not None
    assert "does not verify RS256" in refusal(jwt_public_key=str(path))
    p256 = public_pem(ec.generate_private_key(ec.SECP256R1()))
    assert "does not verify ES384" in refusal(jwt_public_key=p256, jwt_algorithms=["ES384"])
    private = ed.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    line = refusal(jwt_public_key=private, jwt_algorithms=["EdDSA"])
    assert "holds a private key" in line
    assert "BEGIN" not in line  # never echoed
    assert "cannot read" in refusal(jwt_public_key=str(tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    ("providers", "expected"),
    [
        (f'[[auth.providers]]\njwks_url = "{JWKS}"\npublic_key = "k"\n', "give exactly one key source"),
        ('[[auth.providers]]\nname = "a"\n', "provider 'a': give exactly one key source"),
        (
            '[[auth.providers]]\nsecret_env = "NOT_SET_ANYWHERE"\n',
            "secret_env names NOT_SET_ANYWHERE, which is not set",
        ),
        ('[[auth.providers]]\nsecret_env = "SHORT_SECRET"\n', "SHORT_SECRET is a default or shorter than 32 bytes"),
        (f'[[auth.providers]]\njwks_url = "{JWKS}"\nalgorithms = ["RS256", "HS256"]\n', "mix HMAC"),
        (f'[[auth.providers]]\njwks_url = "{JWKS}"\nsecret = "inline"\n', "secret: unknown key"),
        (f'[[auth.providers]]\njwks_url = "{JWKS}"\n[[auth.providers]]\njwks_url = "{JWKS}"\n', "more than one"),
        (
            '[[auth.providers]]\noidc_issuer = "https://i.example"\n'
            f'[[auth.providers]]\njwks_url = "{JWKS}"\nissuer = "https://i.example"\n',
            "issuer https://i.example is declared by two providers",
        ),
        (f'[[auth.providers]]\njwks_url = "{JWKS}"\nuser_prefix = "a b:"\n', "user_prefix"),
    ],
)
def test_invalid_provider_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, providers: str, expected: str
) -> None:
    monkeypatch.setenv("SHORT_SECRET", "short")
    path = tmp_path / "switchboard.toml"
    path.write_text(providers)
    line = refusal(config=path)
    assert expected in line, line
    assert "short" not in line.split(":", 1)[1].replace("shorter", "")  # a secret's value is never echoed


def test_a_file_provider_beside_the_environment_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_SECRET", STRONG)
    path = tmp_path / "switchboard.toml"
    path.write_text(
        '[[auth.providers]]\nname = "backend"\nissuer = "https://api.example"\nsecret_env = "BACKEND_SECRET"\n'
    )
    providers = Settings(config=path, oidc_issuer="https://idp.example/").auth_providers
    assert [(p.label, p.issuer, p.algorithms) for p in providers] == [
        ("env", "https://idp.example/", ["RS256"]),
        ("backend", "https://api.example", ["HS256"]),
    ]
