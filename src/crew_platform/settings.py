"""Every environment variable the platform reads, in one place (documented in the README)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./data/crew_platform.db"
CEREBRAS_CLOUD_URL = "https://api.cerebras.ai/v1"
MIN_SECRET_LENGTH = 32
"""JWT_SECRET and API_KEY_SECRET: a shorter HMAC secret could be guessed offline from one token."""


def limit_is_off(value: str) -> bool:
    """A rate-limit setting that means "no limit": `off`, `none`, `disabled` or empty."""
    return value.strip().lower() in ("", "off", "none", "disabled")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = DEFAULT_SQLITE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    cerebras_api_key: SecretStr | None = None
    cerebras_base_url: str = CEREBRAS_CLOUD_URL
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    default_model: str = "llama-4-maverick-17b-128e-instruct"
    llm_max_concurrency: int = Field(default=64, ge=1)
    execution_max_concurrency: int = Field(default=128, ge=1)
    executor: Literal["inprocess", "queue"] = "inprocess"
    """`inprocess`: the server runs the executions it accepts (one process, no other service).
    `queue`: API processes enqueue them on BROKER_URL and `crew-platform worker` processes run
    them (needs PostgreSQL, BROKER_URL and REDIS_URL)."""
    broker_url: str | None = None
    """EXECUTOR=queue: `redis://…` (Redis Streams, a consumer group) or `amqp://…` (RabbitMQ)."""
    broker_redelivery_seconds: float = Field(default=60.0, gt=0)
    """Redis Streams: a message a worker received but has not acknowledged for this long is
    given to another worker (the leases make that harmless if the first one still runs it)."""
    lease_seconds: float = Field(default=15.0, gt=0)
    """How long a process holds the executions it runs without a heartbeat (it beats every
    third of this); a process silent longer loses them to another process."""
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    llm_max_retries: int = Field(default=3, ge=0)
    models_cache_seconds: float = Field(default=60.0, ge=0)
    """How long model lists are cached, and how long a model found missing is remembered."""
    model_fallbacks: str = ""
    """`model=fallback,...` (`*=model` for any model): where a call goes on when its model is
    not served (see `llm.fallback`)."""

    sqlite_read_connections: int = Field(default=2, ge=1)
    database_pool_size: int = Field(default=40, ge=1)
    """PostgreSQL connections of one process (API or worker), kept open once opened. Every
    process of a deployment has its own pool: their sum must stay under the server's
    `max_connections` (100 by default)."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    http_keep_alive_seconds: int = Field(default=75, ge=1)
    """How long an idle keep-alive connection stays open. Longer than common clients' own pool
    expiry (httpx 5 s, aiohttp 15 s), so the client, not the server, closes an idle connection:
    uvicorn's 5 s default raced httpx's 5 s and a busy client sometimes sent a request on a
    connection the server had just closed (a ReadError on a POST, which is not retried)."""

    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    """A connection whose request line and headers have not all arrived this long after it
    opened (or after the request's first byte, on a keep-alive connection) is closed."""
    http_access_log: bool = False
    """uvicorn's line per request; off by default (one line per request drowns the run log)."""

    redis_url: str | None = None
    events_channel_prefix: str | None = None
    """Redis channel prefix of this deployment's events (channel `<prefix>:events`). Default: a
    short hash of DATABASE_URL (without its password), so processes on one database share
    events and deployments sharing one Redis never see each other's (pub/sub ignores the
    Redis database number)."""
    events_outbox_size: int = Field(default=10_000, ge=1)
    """Events waiting to be published to Redis; beyond it they are dropped and counted."""
    events_publish_timeout_seconds: float = Field(default=1.0, gt=0)
    """A Redis publish taking longer marks the bus down (events dropped until it is back)."""
    events_retry_seconds: float = Field(default=1.0, gt=0)
    """How often a bus that is down is probed (and its reader reconnected)."""
    rate_limit_api: str = "100/minute"
    rate_limit_ws: str = "5/minute"
    trusted_proxies: str = ""
    rate_limit_key_prefix: str = "crew_platform"
    rate_limit_store_retry_seconds: float = Field(default=5.0, gt=0)
    """While Redis is unreachable the rate limits count in memory; how often Redis is tried
    again."""

    ws_queue_size: int = Field(default=1000, ge=1)
    ws_ping_interval_seconds: float = Field(default=20.0, gt=0)
    ws_compression: bool = False
    """permessage-deflate on WebSockets: compressing each event once per subscriber costs more
    server CPU and latency than the small JSON messages gain on the wire."""

    tool_timeout_seconds: float = Field(default=30.0, gt=0)
    """A tool call taking longer returns a time-out error to the model."""
    tool_fetch_max_bytes: int = Field(default=1024 * 1024, ge=1)
    """At most this many bytes of a response are read (fetch_url, HTTP tools)."""
    tool_result_max_chars: int = Field(default=20_000, ge=1)
    """A tool's result is cut to this many characters before the model sees it."""
    tools_allowed_networks: str = ""
    """Comma-separated CIDRs tools may reach although they are loopback, private or link-local
    (e.g. `127.0.0.0/8` for a local MCP server); empty: only public addresses."""
    web_search_url: str | None = None
    """Base URL of a SearXNG instance (JSON output enabled) for the web_search tool."""
    mcp_allow_stdio: bool = False
    """Whether MCP servers may be started as local processes (stdio transport)."""

    auth_mode: Literal["none", "api_key", "jwt"] = "none"
    """`none`: no credential asked (`serve` then binds only loopback addresses unless
    `--allow-unauthenticated`); `api_key`: API keys; `jwt`: bearer JWTs, and API keys too."""
    auth_ownership: bool = False
    """A principal sees and changes only its own resources (others are 404); `admin` sees all."""
    auth_docs_public: bool = True
    """`/docs`, `/redoc` and `/openapi.json` need no credential (they describe the API, no data)."""
    api_key_secret: SecretStr | None = None
    """Server secret of the API keys' HMAC-SHA256 hashes; without it no API key is accepted."""
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a looked-up API key is trusted before it is read again (a revocation takes
    effect within this time)."""
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    """PEM text of an RSA or EC public key, or the path of a PEM file."""
    jwt_jwks_url: str | None = None
    """URL (or file path) of a JSON Web Key Set, cached and fetched again on an unknown `kid`."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=600)
    """Clock skew allowed on `exp`, `nbf` and `iat`."""
    rate_limit_auth_failures: str = "10/minute"
    """Per-IP budget of failed authentications; past it every request of that IP gets 429."""

    @field_validator("tools_allowed_networks")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        from crew_platform.tools.ssrf import parse_networks

        parse_networks(value)
        return value

    @field_validator("model_fallbacks")
    @classmethod
    def _valid_fallbacks(cls, value: str) -> str:
        from crew_platform.llm.fallback import parse_model_fallbacks

        parse_model_fallbacks(value)
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_file_exists(cls, value: str | None) -> str | None:
        """A URL may be down for a while (its keys are read on first use); a missing file is a
        mistake in the configuration, not an outage, so it stops start-up."""
        if value is None or value.startswith(("http://", "https://")):
            return value
        if not Path(value.removeprefix("file://")).expanduser().is_file():
            raise ValueError(f"no JWKS file at {value!r} (a path, a file:// URL or an http(s) URL)")
        return value

    @field_validator("api_key_secret", "jwt_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters (random ones)")
        return value

    @model_validator(mode="after")
    def _jwt_has_a_key(self) -> Settings:
        keys = (self.jwt_secret, self.jwt_public_key, self.jwt_jwks_url)
        if self.auth_mode == "jwt" and not any(keys):
            raise ValueError(
                "AUTH_MODE=jwt needs JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL to verify tokens"
            )
        if self.auth_mode == "api_key" and self.api_key_secret is None:
            raise ValueError("AUTH_MODE=api_key needs API_KEY_SECRET (the API keys' hash secret)")
        return self

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Accept the plain URLs people paste and pick the async driver for them."""
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            return "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        raw = self.database_url.split(":///", 1)[1].split("?", 1)[0]
        return None if raw in ("", ":memory:") else Path(raw)


@lru_cache
def get_settings() -> Settings:
    return Settings()
