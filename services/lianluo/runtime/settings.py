"""Typed settings read from the environment; a missing or bad variable stops the start."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Annotated

import aiosmtplib
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lianluo.runtime.kafka import FETCH_MAX_WAIT_MS

# Words of example secrets that must never reach a running platform.
_PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "password", "placeholder", "example")


class ServiceSettings(BaseSettings):
    """What every service needs; each service subclasses it for its own settings."""

    model_config = SettingsConfigDict(env_prefix="LIANLUO_", extra="ignore", frozen=True)

    database_url: Annotated[str, Field(min_length=1)]
    kafka_bootstrap_servers: Annotated[str, Field(min_length=1)]
    # The admin key for platform operations (at least 24 characters, never a placeholder).
    admin_key: SecretStr
    grpc_host: str = "127.0.0.1"
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 50051
    # Every topic of a cell carries its prefix, for example "cell-1." in "cell-1.tenant.config".
    topic_prefix: str = ""
    topic_partitions: Annotated[int, Field(ge=1, le=1024)] = 8
    # Apply migrations and create topics at start-up (development); production runs
    # `lianluo migrate` as a separate step.
    auto_migrate: bool = True
    shutdown_grace_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    log_level: str = "INFO"
    db_pool_min: Annotated[int, Field(ge=1)] = 1
    db_pool_max: Annotated[int, Field(ge=1)] = 10
    # How long a consumer's fetch may wait for records. 20 suits the development broker, which
    # holds a fetch for about half of it (one hop's latency); Apache Kafka answers a fetch when a
    # record arrives, so set it to Kafka's default, 500, there (the chart does).
    kafka_fetch_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = FETCH_MAX_WAIT_MS
    # The same for the tenant configuration every replica follows. It stays as short as the
    # events' by default: a contact started right after a change (a new flow, a queue) reaches
    # its consumers through the events' topics, and must not overtake the change. A longer wait
    # saves an idle cell's CPU where that race does not matter.
    kafka_config_fetch_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = FETCH_MAX_WAIT_MS
    # Tries of one event before it goes to the dead-letter topic (outages do not count).
    consumer_max_attempts: Annotated[int, Field(ge=1, le=100)] = 5

    @field_validator("admin_key")
    @classmethod
    def _refuse_placeholder(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if len(secret) < 24:
            raise ValueError("must be at least 24 characters")
        # Length alone lets "changemechangemechangeme" through; a placeholder inside is refused.
        if any(word in secret.lower() for word in _PLACEHOLDER_WORDS):
            raise ValueError("contains a placeholder; generate a real secret")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    def topic(self, name: str) -> str:
        """The cell-prefixed name of a logical topic such as "tenant.config"."""
        return f"{self.topic_prefix}{name}"


class SmtpRelaySettings(BaseSettings):
    """The SMTP relay a service sends e-mail through (LIANLUO_SMTP_*), shared by every service
    that sends mail."""

    model_config = SettingsConfigDict(env_prefix="LIANLUO_", extra="ignore", frozen=True)

    smtp_host: str = "127.0.0.1"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    # STARTTLS after connecting; off for a local relay that speaks plain SMTP.
    smtp_starttls: bool = False
    smtp_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0

    async def relay(self, message: EmailMessage) -> None:
        """Send `message` through this relay (aiosmtplib's errors when it refuses)."""
        await aiosmtplib.send(
            message,
            hostname=self.smtp_host,
            port=self.smtp_port,
            username=self.smtp_username or None,
            password=self.smtp_password.get_secret_value() or None,
            start_tls=self.smtp_starttls,
            timeout=self.smtp_timeout_seconds,
        )


class ObjectStoreSettings(BaseSettings):
    """Where a service keeps objects (attachments, audio, exports), LIANLUO_OBJECT_STORE_*: an
    S3-compatible bucket when `object_store_bucket` is set, else a local directory, which serves
    one machine (`make run`) but is neither shared between replicas nor kept by a pod."""

    model_config = SettingsConfigDict(env_prefix="LIANLUO_", extra="ignore", frozen=True)

    object_store_bucket: str = ""
    # The S3 endpoint; empty is AWS itself. An http:// endpoint is allowed (a local server).
    object_store_endpoint: str = ""
    object_store_region: str = "us-east-1"
    object_store_access_key_id: str = ""
    object_store_secret_access_key: SecretStr = SecretStr("")
    object_store_path: str = ".state/objects"
