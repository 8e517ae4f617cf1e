"""Settings, read from ``SWITCHBOARD_*`` environment variables.

Every field is documented in the README's settings table; keep the two in step.
"""

from __future__ import annotations

import hmac
import os
import secrets
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.auth_config import (
    HMAC_ALGORITHMS,
    MIN_SECRET_BYTES,
    EnvProvider,
    JwksOptions,
    ProviderConfig,
    check_algorithms,
    check_providers,
    check_secret,
)
from app.auth_config import (
    check_url as check_http_url,
)
from app.broker.base import HistoryOptions
from app.broker.redis_target import check_url
from app.env_names import Environment, classify
from app.hooks import load_hooks
from app.namespaces import NAMESPACE_NAME, ConfigFile, Namespaces, check_proxy_url, read_config
from app.reserved import reserved
from app.tracing import check_environment


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    dev_mode: bool = False
    instance_id: str = Field(default_factory=_default_instance_id)

    broker_url: str = "memory://"
    # Bounded publish pool: redis-py fails outright when an unbounded pool would be needed.
    redis_max_connections: int = 16

    jwt_secret: SecretStr = SecretStr("")
    # Empty: HS256 with a secret, RS256 with a key source (below). "none" is never accepted.
    jwt_algorithms: Annotated[list[str], NoDecode] = []
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    # Server API credentials (docs/server-api.md): comma-separated, each at least 32 bytes.
    api_keys: Annotated[list[SecretStr], NoDecode] = []
    # /docs and /openapi.json; unset means on in dev mode only.
    docs: bool | None = None
    idempotency_ttl: float = 300.0
    # One user's connections across the cluster (0 = no limit); beyond it, close 4004.
    user_connection_limit: int = 0

    # Empty means same-origin only; requests without an Origin header (non-browser clients) pass.
    allowed_origins: Annotated[list[str], NoDecode] = []

    heartbeat_interval: float = 30.0
    heartbeat_timeout: float = 10.0
    auth_timeout: float = 10.0
    max_message_bytes: int = 65536
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    send_queue_size: int = 256
    # Seconds a connection has to send its complete request line and headers (slowloris).
    handshake_timeout: float = 10.0
    # A socket that has not drained its backlog in this many seconds is aborted as stalled.
    write_timeout: float = 30.0
    # Open WebSockets per instance; beyond it handshakes get HTTP 503, so a proxy tries another.
    max_connections: int = 20000
    # Handshakes per second per instance (a reconnect storm); beyond it, HTTP 503 + Retry-After.
    max_handshakes_per_second: float = 1000.0
    presence_ttl: float = 30.0
    # Allocations between young garbage collections (CPython: 700; 0 keeps CPython's). app/gc_tuning.py
    gc_threshold: int = 20000
    # Channel history for recovery (docs/delivery.md): messages kept per channel (0 = off), how
    # long they live after the channel's last publish, and how long its epoch and offset live.
    history_size: int = 1000
    history_ttl: float = 300.0
    history_meta_ttl: float = 86400.0
    # The most one history read holds, in bytes: a replay is sent a page this size at a time,
    # each once the client has taken the last; a history reply is cut to it.
    history_read_bytes: int = 1048576
    # The /ws protocol (docs/protocol.md): namespaces file, permission hook, limits, keepalive.
    config: Path | None = None
    hooks: str | None = None
    hook_timeout: float = 2.0
    allow_anonymous: bool = True
    max_channels_per_connection: int = 128
    ping_interval: float = 25.0
    refresh_grace: float = 25.0
    # When set, /metrics is served on this port only (not on the app port).
    metrics_port: int | None = None
    # On SIGTERM, open sockets are closed with 1012 spread over this many seconds.
    drain_seconds: float = 10.0

    # Proxies to the backend (docs/proxies.md): the backend decides connect, refresh and rpc over
    # HTTP (subscribe and publish per namespace, in the namespaces file). Every URL is configuration.
    connect_proxy_url: str | None = None
    refresh_proxy_url: str | None = None
    rpc_proxy_url: str | None = None
    # Handshake headers the connect proxy is sent (case-insensitive); no other header leaves.
    proxy_headers: Annotated[list[str], NoDecode] = [
        "Cookie",
        "Authorization",
        "User-Agent",
        "X-Forwarded-For",
        "Origin",
    ]
    # Names a Centrifugo client may send in connect's emulated ``headers`` for the connect proxy
    # (none by default). Always the client's own words: they never stand in for a real handshake
    # header (a proxy's X-Forwarded-For, the browser's Origin), which is kept when both come.
    proxy_emulated_headers: Annotated[list[str], NoDecode] = []
    proxy_timeout: float = 1.0
    # Calls in flight to the backend per process; the rest wait (up to AUTH_TIMEOUT) for a slot.
    proxy_max_concurrency: int = 64
    # What one client can make the cluster do (docs/security.md): each channel with presence costs
    # the cluster a refresh every PRESENCE_TTL/3, so anonymous connections get a cap of their own.
    max_channels_anonymous: int = 16

    # -- Tokens from identity providers (docs/auth.md). One key source for the SWITCHBOARD_JWT_*
    # provider (instead of JWT_SECRET); more providers in SWITCHBOARD_CONFIG's [[auth.providers]].
    jwt_public_key: str | None = None  # PEM, inline or a file path
    jwks_url: str | None = None
    oidc_issuer: str | None = None  # discovery: <issuer>/.well-known/openid-configuration
    # An unknown kid refetches at most this often; Cache-Control max-age is clamped to
    # [JWKS_MIN_REFRESH, JWKS_MAX_TTL] (JWKS_CACHE_TTL without one); held keys outlive a provider
    # outage by JWKS_MAX_STALE; one fetch (discovery included) takes at most JWKS_TIMEOUT.
    jwks_min_refresh: float = 30.0
    jwks_cache_ttl: float = 300.0
    jwks_max_ttl: float = 3600.0
    jwks_max_stale: float = 86400.0
    jwks_timeout: float = 5.0

    # Per-connection budgets (issue 21, app/budgets.py; docs/security.md).
    # Bytes of /ws commands read but not finished; beyond it, reading pauses (TCP pushes back).
    max_in_flight_bytes: int = 262144
    # join/leave pushes per connection and channel: a bucket of this burst, refilled at this rate;
    # beyond it the subscribe still works, but its join (and so its leave) is not pushed. 0: off.
    join_leave_burst: int = 3
    join_leave_per_second: float = 0.1
    # History bytes per connection (history replies, resume replays): over it, history is
    # refused with 112 and a replay waits for the budget.
    history_bytes_per_second: float = 1048576.0
    history_bytes_burst: int = 4194304

    # Admin web UI (issue 29, app/routes/admin.py; docs/admin.md): off unless ADMIN is true.
    # ADMIN_PASSWORD signs admins in and keys their session cookies: never an API key or the JWT
    # secret. A session lasts ADMIN_SESSION_TTL seconds.
    admin: bool = False
    admin_password: SecretStr = SecretStr("")
    admin_session_ttl: float = 28800.0

    # -- Traces (issue 29, app/tracing.py; docs/observability.md). Off by default; on, the SDK is
    # configured by the standard OTEL_* variables (endpoint, sampler, service name).
    tracing: bool = False

    # -- The transactional outbox (issue 27, app/outbox/; docs/outbox.md). A PostgreSQL DSN: when
    # set, this instance relays committed switchboard_outbox rows. A secret: only its host and
    # database are ever logged. Rows per claim; the poll that catches a NOTIFY lost while
    # disconnected; the longest back-off after an error; PostgreSQL's idle-in-transaction timeout
    # for a relay's claim (a relay that hangs holding its lanes loses them after this long).
    outbox_url: SecretStr | None = None
    outbox_batch_size: int = 500
    outbox_poll_interval: float = 1.0
    outbox_retry_max: float = 10.0
    outbox_claim_timeout: float = 30.0

    # One-way streams (issue 26, app/streams/; docs/protocol.md): the most channels one /sse or
    # /stream may read, which bounds its resume cursor (an SSE id) to about 52 bytes each.
    stream_max_channels: int = 32

    # Centrifugo's personal channel (issue 25; docs/sdks.md): every signed-in connection is
    # subscribed server-side to "<namespace>:#<user>", a user-limited channel. Empty: none.
    personal_channel_namespace: str = ""

    # Set by the validator, never from the environment: tells start-up to warn loudly.
    _generated_secret: bool = PrivateAttr(default=False)
    _namespaces: Namespaces | None = PrivateAttr(default=None)
    _generated_api_key: bool = PrivateAttr(default=False)
    _hooks: object | None = PrivateAttr(default=None)
    _file: ConfigFile | None = PrivateAttr(default=None)
    _auth_providers: list[ProviderConfig] = PrivateAttr(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, Environment(settings_cls), dotenv_settings, file_secret_settings

    @property
    def service_links(self) -> list[str]:
        """Kubernetes service-link variables in the environment, ignored (start-up notes them)."""
        prefix = self.model_config.get("env_prefix", "")
        return classify(os.environ, prefix, type(self).model_fields).links

    @property
    def namespaces(self) -> Namespaces:
        assert self._namespaces is not None
        return self._namespaces

    @property
    def single_process_broker(self) -> bool:
        """memory://: publications reach this process's own clients only."""
        return self.broker_url.startswith("memory:")

    @property
    def generated_api_key(self) -> bool:
        return self._generated_api_key

    @property
    def docs_enabled(self) -> bool:
        return self.dev_mode if self.docs is None else self.docs

    @property
    def hook_object(self) -> object | None:
        return self._hooks

    @property
    def history(self) -> HistoryOptions:
        return HistoryOptions(self.history_size, self.history_ttl, self.history_meta_ttl, self.history_read_bytes)

    @property
    def generated_secret(self) -> bool:
        return self._generated_secret

    @property
    def auth_providers(self) -> list[ProviderConfig]:
        return self._auth_providers

    @property
    def jwks_options(self) -> JwksOptions:
        return JwksOptions(
            self.jwks_min_refresh, self.jwks_cache_ttl, self.jwks_max_ttl, self.jwks_max_stale, self.jwks_timeout
        )

    @property
    def hmac_algorithm(self) -> str:
        """What mint_token signs with: the first of JWT_ALGORITHMS when they are HMAC ones."""
        return self.jwt_algorithms[0] if self.jwt_algorithms and self.jwt_algorithms[0] in HMAC_ALGORITHMS else "HS256"

    @field_validator(
        "jwt_algorithms", "allowed_origins", "api_keys", "proxy_headers", "proxy_emulated_headers", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("jwt_algorithms")
    @classmethod
    def _pinned_algorithms(cls, value: list[str]) -> list[str]:
        return check_algorithms(value) if value else value

    @field_validator("jwks_url", "oidc_issuer")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("jwks_min_refresh", "jwks_cache_ttl", "jwks_max_ttl", "jwks_max_stale", "jwks_timeout")
    @classmethod
    def _positive_jwks_seconds(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator(
        "max_message_bytes",
        "send_queue_size",
        "rate_limit_burst",
        "max_channels_per_connection",
        "max_connections",
        "history_read_bytes",
        "proxy_max_concurrency",
        "max_channels_anonymous",
        "max_in_flight_bytes",
        "history_bytes_burst",
        "outbox_batch_size",
        "stream_max_channels",
    )
    @classmethod
    def _positive_int(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("history_size", "gc_threshold", "join_leave_burst")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (off) or more")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        check_url(value)
        return value

    @field_validator("join_leave_per_second", "history_bytes_per_second")
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("max_handshakes_per_second")
    @classmethod
    def _at_least_one(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1 (a bucket under one token never admits)")
        return value

    @field_validator("history_ttl", "history_meta_ttl", "ping_interval")
    @classmethod
    def _at_least_a_second(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1 second")
        return value

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for n, key in enumerate(value, start=1):
            if len(key.get_secret_value().encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"key {n} is shorter than {MIN_SECRET_BYTES} bytes; generate one with: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return value

    @field_validator("user_connection_limit")
    @classmethod
    def _limit_or_off(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (off) or more")
        return value

    @field_validator(
        "hook_timeout",
        "refresh_grace",
        "idempotency_ttl",
        "write_timeout",
        "handshake_timeout",
        "proxy_timeout",
        "outbox_poll_interval",
        "outbox_retry_max",
        "outbox_claim_timeout",
    )
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("connect_proxy_url", "refresh_proxy_url", "rpc_proxy_url")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        return check_proxy_url(value) if value else None

    @model_validator(mode="after")
    def _load_files(self) -> Settings:
        # Checked here so that a bad file or hook stops start-up with one line (load_settings).
        self._file = read_config(self.config)
        self._namespaces = Namespaces(self._file, self.history, self.config.name if self.config else "")
        self._hooks = load_hooks(self.hooks) if self.hooks else None
        return self

    @model_validator(mode="after")
    def _personal_namespace(self) -> Settings:
        name = self.personal_channel_namespace
        if name and (not NAMESPACE_NAME.fullmatch(name) or self.namespaces.known(f"{name}:#x") is None):
            raise ValueError(f"personal_channel_namespace: {name!r} is not a namespace the namespaces file declares")
        if name and reserved(f"{name}:"):
            raise ValueError(f"personal_channel_namespace: {name!r} is reserved for Switchboard's own channels")
        return self

    @model_validator(mode="after")
    def _tracing_environment(self) -> Settings:
        if self.tracing:  # a wrong OTEL_TRACES_EXPORTER stops start-up with one line
            check_environment()
        return self

    @model_validator(mode="after")
    def _meta_outlives_history(self) -> Settings:
        if self.history_meta_ttl < self.history_ttl:
            raise ValueError("SWITCHBOARD_HISTORY_META_TTL must be at least SWITCHBOARD_HISTORY_TTL")
        return self

    @property
    def outbox_worst_retry(self) -> float:
        """The longest a published outbox row can wait for its retry: a relay's longest back-off,
        then a poll, or a hung relay's claim timing out (docs/outbox.md)."""
        return self.outbox_retry_max + self.outbox_poll_interval + self.outbox_claim_timeout

    @model_validator(mode="after")
    def _idempotency_outlives_outbox_retry(self) -> Settings:
        # A row published but not yet deleted is published again on retry; only the idempotency
        # record makes that a no-op, so it must still exist when the retry comes.
        if self.outbox_url is not None and self.idempotency_ttl <= self.outbox_worst_retry:
            raise ValueError(
                f"SWITCHBOARD_IDEMPOTENCY_TTL ({self.idempotency_ttl:g} s) must outlive the outbox relay's worst "
                f"retry delay ({self.outbox_worst_retry:g} s: OUTBOX_RETRY_MAX + OUTBOX_POLL_INTERVAL + "
                "OUTBOX_CLAIM_TIMEOUT), or a retried row could be delivered twice"
            )
        return self

    @field_validator("outbox_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        from psycopg.conninfo import conninfo_to_dict  # only with an outbox configured

        try:
            conninfo_to_dict(value.get_secret_value())
        except Exception:  # libpq's message may quote the password (a bad %-escape): never shown
            raise ValueError("is not a valid PostgreSQL connection URL (check its %-escapes)") from None
        return value

    @model_validator(mode="after")
    def _dev_api_key(self) -> Settings:
        if self.dev_mode and not self.api_keys:
            # Printed once at start-up (app/main.py); never valid on another instance.
            self.api_keys = [SecretStr(secrets.token_urlsafe(32))]
            self._generated_api_key = True
        return self

    @model_validator(mode="after")
    def _admin_password_policy(self) -> Settings:
        if not self.admin:
            return self
        password = self.admin_password.get_secret_value()
        if not password:
            raise ValueError("SWITCHBOARD_ADMIN is on but SWITCHBOARD_ADMIN_PASSWORD is empty")
        others = [*self.api_keys, self.jwt_secret]
        if any(hmac.compare_digest(o.get_secret_value().encode(), password.encode()) for o in others):
            raise ValueError("SWITCHBOARD_ADMIN_PASSWORD must differ from every API key and the JWT secret")
        if not self.dev_mode:
            check_secret(password, "SWITCHBOARD_ADMIN_PASSWORD")
        if self.admin_session_ttl < 60:
            raise ValueError("SWITCHBOARD_ADMIN_SESSION_TTL must be at least 60 seconds")
        return self

    @model_validator(mode="after")
    def _secret_policy(self) -> Settings:
        secret = self.jwt_secret.get_secret_value()
        if any(hmac.compare_digest(key.get_secret_value(), secret) for key in self.api_keys if secret):
            raise ValueError("an API key must not equal SWITCHBOARD_JWT_SECRET: a user's token is never a credential")
        env = EnvProvider(
            self.jwt_secret,
            self.jwt_algorithms,
            self.jwt_issuer,
            self.jwt_audience,
            self.jwt_public_key,
            self.jwks_url,
            self.oidc_issuer,
        )
        sources = env.key_sources()
        from_file = self._file.auth.providers if self._file else []
        if not secret and not sources and not from_file:
            if not self.dev_mode:
                raise ValueError(
                    "SWITCHBOARD_JWT_SECRET is empty; set a random secret of at least "
                    f"{MIN_SECRET_BYTES} bytes, or a key source (SWITCHBOARD_OIDC_ISSUER, SWITCHBOARD_JWKS_URL, "
                    "SWITCHBOARD_JWT_PUBLIC_KEY; docs/auth.md), or SWITCHBOARD_DEV_MODE=true for local development"
                )
            # Random per process: fine for one dev instance, and tokens minted by /dev/token work.
            self.jwt_secret = SecretStr(secrets.token_urlsafe(48))
            self._generated_secret = True
        elif secret and not self.dev_mode:
            check_secret(secret, "SWITCHBOARD_JWT_SECRET")
        self._auth_providers = check_providers([*env.providers(self.jwt_secret), *from_file])
        return self


def setting_name(field: str) -> str:
    """The environment variable a field is read from (``broker_url`` -> ``SWITCHBOARD_BROKER_URL``)."""
    prefix = Settings.model_config.get("env_prefix", "")
    return (prefix + field).upper() if field in Settings.model_fields else field


def settings_error_line(exc: Exception) -> str:
    """One readable line for a settings failure, naming each setting, without echoing values."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors(include_input=False):
            where = ".".join(setting_name(str(p)) for p in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        line = "; ".join(parts)
    else:
        line = str(exc)
    return "invalid settings: " + " ".join(line.split())
