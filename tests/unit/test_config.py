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


# -- the environment: Kubernetes service links and unknown names ----------------------------------

# What a kubelet gives a pod for the Service `switchboard` (ports http:80, metrics:9000) and for a
# hypothetical `switchboard-metrics`, whose SWITCHBOARD_METRICS_PORT lands on a real setting.
SERVICE_LINKS = {
    "SWITCHBOARD_SERVICE_HOST": "10.96.0.12",
    "SWITCHBOARD_SERVICE_PORT": "80",
    "SWITCHBOARD_SERVICE_PORT_HTTP": "80",
    "SWITCHBOARD_SERVICE_PORT_METRICS": "9000",
    "SWITCHBOARD_PORT": "tcp://10.96.0.12:80",
    "SWITCHBOARD_PORT_80_TCP": "tcp://10.96.0.12:80",
    "SWITCHBOARD_PORT_80_TCP_PROTO": "tcp",
    "SWITCHBOARD_PORT_80_TCP_PORT": "80",
    "SWITCHBOARD_PORT_80_TCP_ADDR": "10.96.0.12",
    "SWITCHBOARD_PORT_9000_TCP": "tcp://10.96.0.12:9000",
    "SWITCHBOARD_METRICS_SERVICE_HOST": "fd00::7",
    "SWITCHBOARD_METRICS_PORT": "tcp://[fd00::7]:9000",
    "SWITCHBOARD_METRICS_PORT_9000_TCP_ADDR": "fd00::7",
}


def test_kubernetes_service_links_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SERVICE_LINKS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(jwt_secret=STRONG)
    assert settings.port == 8000
    assert settings.metrics_port is None
    assert sorted(settings.service_links) == sorted(SERVICE_LINKS)


def test_real_settings_with_link_like_names_stay_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_PORT", "8123")
    monkeypatch.setenv("SWITCHBOARD_METRICS_PORT", "9100")
    settings = Settings(jwt_secret=STRONG)
    assert (settings.port, settings.metrics_port, settings.service_links) == (8123, 9100, [])


def refusal(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings(jwt_secret=STRONG)
    line = settings_error_line(info.value)
    assert "\n" not in line
    return line


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("SWITCHBOARD_REDIS_URL", "SWITCHBOARD_BROKER_URL"),
        ("SWITCHBOARD_API_KEY", "SWITCHBOARD_API_KEYS"),
        ("SWITCHBOARD_ALLOWED_ORIGIN", "SWITCHBOARD_ALLOWED_ORIGINS"),
        ("switchboard_metric_port", "SWITCHBOARD_METRICS_PORT"),
    ],
)
def test_an_unknown_name_is_refused_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, closest: str
) -> None:
    line = refusal(monkeypatch, name, "9000")
    assert line == f"invalid settings: {name.upper()}: unknown setting; did you mean {closest}?"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWITCHBOARD_JWKS_URI", "https://idp.example/jwks"),  # SWITCHBOARD_JWKS_URL is a setting now
        # Link names with values a kubelet never writes are not links.
        ("SWITCHBOARD_SERVICE_HOST", "switchboard.example"),
        ("SWITCHBOARD_PORT_80_TCP", "10.0.0.1:80"),
        ("SWITCHBOARD_PORT", "http://10.0.0.1:80"),
    ],
)
def test_anything_else_unknown_is_refused_without_its_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    line = refusal(monkeypatch, name, value)
    assert line.startswith(f"invalid settings: {name}: ")
    assert value not in line


def test_known_names_come_from_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extended(Settings):
        brand_new_setting: int = 0

    monkeypatch.setenv("SWITCHBOARD_BRAND_NEW_SETTING", "3")
    assert Extended(jwt_secret=STRONG).brand_new_setting == 3
    with pytest.raises(ValidationError, match="SWITCHBOARD_BRAND_NEW_SETTING"):
        Settings(jwt_secret=STRONG)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://h:notaport/0", "port 'notaport' is not a number"),
        ("redis://:pw@h:99999/0", "port '99999' is not a number"),
        ("redis://h:6379/zero", "database 'zero' is not a number"),
    ],
)
def test_a_malformed_broker_url_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    line = refusal(monkeypatch, "SWITCHBOARD_BROKER_URL", url)
    assert line.startswith(f"invalid settings: SWITCHBOARD_BROKER_URL: {problem}")
    assert "pw" not in line


def test_every_invalid_setting_is_named_as_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_MAX_CONNECTIONS", "many")
    line = refusal(monkeypatch, "SWITCHBOARD_HEARTBEAT_TIMEOUT", "soon")
    assert "SWITCHBOARD_MAX_CONNECTIONS: Input should be a valid integer" in line
    assert "SWITCHBOARD_HEARTBEAT_TIMEOUT: Input should be a valid number" in line
    assert "many" not in line
    assert "soon" not in line


def test_memory_broker_is_refused_for_several_workers_outside_dev_mode(capsys: pytest.CaptureFixture[str]) -> None:
    from app.launch import load_settings

    with pytest.raises(SystemExit) as info:
        load_settings({"jwt_secret": STRONG}, workers=2)
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "switchboard: SWITCHBOARD_BROKER_URL is memory://, which reaches the clients of one process only, "
        "and WEB_CONCURRENCY=2: set a redis:// URL, or WEB_CONCURRENCY=1\n"
    )
    assert load_settings({"jwt_secret": STRONG}, workers=1).single_process_broker
    assert load_settings({"dev_mode": True}, workers=2).single_process_broker
