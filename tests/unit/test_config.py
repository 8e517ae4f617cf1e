from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings, settings_error_line

STRONG = "x" * 40


def test_production_refuses_empty_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_JWT_SECRET", raising=False)
    with pytest.raises(ValidationError) as info:
        Settings()
    line = settings_error_line(info.value)
    assert "SWITCHBOARD_JWT_SECRET is empty" in line
    assert "\n" not in line


@pytest.mark.parametrize("secret", ["secret", "changeme", "short-but-not-empty"])
def test_production_refuses_weak_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="default or shorter than 32 bytes"):
        Settings(jwt_secret=secret)


def test_error_line_never_echoes_the_secret() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(jwt_secret="hunter2-is-my-password")
    assert "hunter2" not in settings_error_line(info.value)


def test_dev_mode_generates_a_random_secret() -> None:
    a, b = Settings(dev_mode=True), Settings(dev_mode=True)
    assert a.generated_secret
    assert len(a.jwt_secret.get_secret_value()) >= 32
    assert a.jwt_secret.get_secret_value() != b.jwt_secret.get_secret_value()


def test_env_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_JWT_SECRET", STRONG)
    monkeypatch.setenv("SWITCHBOARD_JWT_ALGORITHMS", "HS256, HS512")
    monkeypatch.setenv("SWITCHBOARD_ALLOWED_ORIGINS", "https://a.example,https://b.example")
    settings = Settings()
    assert settings.jwt_algorithms == ["HS256", "HS512"]
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("algs", "refusal"),
    [
        ("none", "unsupported JWT algorithms"),
        ("HS256,none", "unsupported JWT algorithms"),
        ("RS256", "an HMAC secret cannot verify RS256"),  # a secret is never an RSA key
        ("HS256,RS256", "mix HMAC"),
    ],
)
def test_algorithms_are_pinned_to_supported_ones(algs: str, refusal: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_JWT_ALGORITHMS", algs)
    with pytest.raises(ValidationError, match=refusal):
        Settings(jwt_secret=STRONG)


def test_secret_is_hidden_in_repr() -> None:
    assert STRONG not in repr(Settings(jwt_secret=STRONG))


def test_the_gunicorn_worker_class_does_not_import_metrics() -> None:
    """gunicorn's master loads the worker class before on_starting creates the metrics directory."""
    import subprocess
    import sys

    code = "import sys, app.server; print('app.metrics' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "False"
