"""The one settings object, built at the entry point and passed down.

Every knob an operator may turn lives here; nothing below the CLI reads
environment variables. Unset ``KAFKA_BOOTSTRAP_SERVERS`` means "start the
embedded broker"; the default ``CLICKHOUSE_URL`` is an in-process chDB data
directory under the working directory.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".telemetry")


class ClickHouseTarget:
    """A parsed ``CLICKHOUSE_URL``: either a chDB path or an HTTP(S) server."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.scheme = parts.scheme
        if parts.scheme == "chdb":
            raw = unquote(parts.path or "")
            # chdb:///abs/path → "/abs/path"; chdb://rel/path → "rel/path"
            path = Path((parts.netloc + raw) if parts.netloc else raw)
            self.path: Path | None = path if path.is_absolute() else Path.cwd() / path
            self.database = parse_qs(parts.query).get("database", ["telemetry"])[0]
            self.host = self.username = self.password = None
            self.port = None
        elif parts.scheme in ("http", "https"):
            self.path = None
            self.host = parts.hostname or "localhost"
            self.port = parts.port or (8443 if parts.scheme == "https" else 8123)
            self.username = unquote(parts.username) if parts.username else "default"
            self.password = unquote(parts.password) if parts.password else ""
            self.database = parts.path.strip("/") or "telemetry"
        else:
            raise ValueError(f"CLICKHOUSE_URL must start with chdb://, http:// or https:// (got {parts.scheme!r})")

    @property
    def embedded(self) -> bool:
        return self.scheme == "chdb"

    def with_database(self, name: str) -> str:
        """This target's URL with database ``name`` (other query parameters and credentials kept)."""
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise ValueError(f"a database name is letters, digits and '_' (got {name!r})")
        parts = urlsplit(self.url)
        if self.embedded:
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()} | {"database": name}
            return f"chdb://{self.path}?{urlencode(query)}"
        return urlunsplit(parts._replace(path=f"/{name}"))

    def redacted(self) -> str:
        if self.embedded:
            return f"chdb://{self.path}?database={self.database}"
        return f"{self.scheme}://{self.username}:***@{self.host}:{self.port}/{self.database}"


class Settings(BaseSettings):
    """Configuration from the environment (and an optional ``.env`` file)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Kafka
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset = start the embedded Tansu broker"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    topic_prefix: str = "telemetry."
    topic_partitions: int = Field(default=4, ge=1)
    consumer_group: str = "telemetry-pipeline"
    schema_registry_url: str | None = None

    # ClickHouse
    clickhouse_url: str = Field(default_factory=lambda: f"chdb://{(Path.cwd() / DEFAULT_DATA_DIR / 'clickhouse')}")

    # Processing
    lateness_horizon: timedelta = timedelta(days=30)
    future_tolerance: timedelta = timedelta(minutes=5)
    max_message_bytes: int = Field(default=1_048_576, ge=1024)
    batch_max_messages: int = Field(default=20_000, ge=1, description="messages per take() batch")
    batch_max_rows: int = Field(default=100_000, ge=1, description="rows per ClickHouse insert")
    batch_max_seconds: float = Field(default=1.0, gt=0, description="flush at least this often")
    duplicate_cache_rows: int = Field(default=2_000_000, ge=0)
    pseudonym_secret: SecretStr = SecretStr("dev-only-pseudonym-secret-change-me")
    derive_intervals: bool = Field(default=True, description="derive 15-minute interval consumption in the stream")
    derive_fuel: bool = Field(default=True, description="derive generator fuel use and runtime per 15 minutes")

    # Anomaly alerts (domain/anomalies.md, docs/alerts.md)
    alerts_enabled: bool = Field(default=True, description="evaluate the anomaly rules and publish alerts")
    alert_policy_file: Path | None = Field(
        default=None, description="TOML file of per-tenant/site rule overrides, validated at start; unset = defaults"
    )

    # Encrypted meter frames (meter.frames, see docs/dlms.md)
    dlms_keys_file: Path | None = Field(
        default=None,
        description="DLMS key file (TOML if *.toml, else JSON) or a mounted secret; read at worker start, "
        "never logged; unset = every frame is dead-lettered as unknown_key",
    )
    dlms_max_wait_ms: int = Field(default=30_000, ge=0, description="wait for missing segments of a split APDU")

    # Worker
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    data_dir: Path = DEFAULT_DATA_DIR
    log_level: str = "WARNING"

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not all(c.isalnum() or c in "._-" for c in v):
            raise ValueError("TOPIC_PREFIX may contain only letters, digits, '.', '_' and '-'")
        return v

    @field_validator("clickhouse_url")
    @classmethod
    def _ch_url(cls, v: str) -> str:
        ClickHouseTarget(v)  # raises ValueError with a clear message
        return v

    @property
    def clickhouse(self) -> ClickHouseTarget:
        return ClickHouseTarget(self.clickhouse_url)

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def lateness_ms(self) -> int:
        return int(self.lateness_horizon.total_seconds() * 1000)

    @property
    def future_tolerance_ms(self) -> int:
        return int(self.future_tolerance.total_seconds() * 1000)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka (confluent-kafka) security settings, passed through unchanged."""
        conf: dict[str, str] = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            conf["ssl.certificate.location"] = str(self.kafka_ssl_certfile)
        if self.kafka_ssl_keyfile:
            conf["ssl.key.location"] = str(self.kafka_ssl_keyfile)
        return conf
