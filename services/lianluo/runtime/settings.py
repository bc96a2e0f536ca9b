"""Typed settings read from the environment; a missing or bad variable stops the start."""

from __future__ import annotations

import os
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Literal

import aiosmtplib
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lianluo.runtime.kafka import FETCH_MAX_WAIT_MS

# Words of example secrets that must never reach a running platform.
_PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "password", "placeholder", "example")


# Kafka's security protocols, and the SASL mechanisms the client speaks with a password.
KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


class KafkaSecuritySettings(BaseSettings):
    """How every Kafka client reaches the brokers beyond their address (LIANLUO_KAFKA_*): the
    security protocol, SASL credentials, and TLS files. The default is the local broker's
    PLAINTEXT; a managed Kafka wants SASL_SSL."""

    model_config = SettingsConfigDict(env_prefix="LIANLUO_", extra="ignore", frozen=True)

    # The checks below read the protocol, so it is declared (and validated) first.
    kafka_security_protocol: KafkaProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    # Checked even when unset: SASL without credentials is refused at the start, not at the
    # first connection.
    kafka_sasl_username: Annotated[str, Field(validate_default=True)] = ""
    kafka_sasl_password: Annotated[SecretStr, Field(validate_default=True)] = SecretStr("")
    # The CA bundle (PEM) that signed the brokers' certificates; empty: the system's trust store.
    kafka_ssl_ca_file: str = ""
    # A client certificate and its key (PEM), for brokers that authenticate clients by TLS.
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: Annotated[str, Field(validate_default=True)] = ""

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("kafka_sasl_username", "kafka_sasl_password")
    @classmethod
    def _credentials_match_protocol(
        cls, value: str | SecretStr, info: ValidationInfo
    ) -> str | SecretStr:
        protocol = info.data.get("kafka_security_protocol")
        given = value.get_secret_value() if isinstance(value, SecretStr) else value
        if protocol in _SASL_PROTOCOLS and not given:
            raise ValueError(f"required when LIANLUO_KAFKA_SECURITY_PROTOCOL is {protocol}")
        if protocol is not None and protocol not in _SASL_PROTOCOLS and given:
            # Credentials the client would never send: the protocol was likely meant as SASL_*.
            raise ValueError(
                f"is set, but LIANLUO_KAFKA_SECURITY_PROTOCOL {protocol} sends no SASL "
                "credentials (SASL_PLAINTEXT or SASL_SSL does)"
            )
        return value

    @field_validator("kafka_ssl_ca_file", "kafka_ssl_cert_file")
    @classmethod
    def _tls_file(cls, value: str, info: ValidationInfo) -> str:
        if value:
            _require_tls(info)
            _readable_file(value)
        if value and info.field_name == "kafka_ssl_ca_file":
            try:
                ssl.create_default_context(cafile=value)
            except ssl.SSLError as error:
                raise ValueError(f"{value} holds no CA certificate in PEM ({error})") from None
        return value

    @field_validator("kafka_ssl_key_file")
    @classmethod
    def _key_pairs_with_cert(cls, value: str, info: ValidationInfo) -> str:
        cert = info.data.get("kafka_ssl_cert_file", "")
        if "kafka_ssl_cert_file" not in info.data:
            return value  # the certificate was refused already, with its reason
        if cert and not value:
            raise ValueError("required with LIANLUO_KAFKA_SSL_CERT_FILE")
        if value and not cert:
            raise ValueError("is set without LIANLUO_KAFKA_SSL_CERT_FILE")
        if value:
            _require_tls(info)
            _key_of(cert, value, "LIANLUO_KAFKA_SSL_CERT_FILE")
        return value


def _require_tls(info: ValidationInfo) -> None:
    protocol = info.data.get("kafka_security_protocol")
    if protocol is not None and protocol not in _TLS_PROTOCOLS:
        raise ValueError(
            f"is set, but LIANLUO_KAFKA_SECURITY_PROTOCOL {protocol} does not use TLS "
            "(SSL or SASL_SSL does)"
        )


def _key_of(cert: str, key: str, setting: str) -> None:
    """Refuse a key file that cannot be read, or is not the key of the certificate `setting`
    names."""
    _readable_file(key)
    try:
        ssl.create_default_context().load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise ValueError(f"{key} is not the key of {setting} {cert} ({error})") from None


def _readable_file(path: str) -> None:
    if not Path(path).exists():
        raise ValueError(f"no such file: {path}")
    if not Path(path).is_file():
        raise ValueError(f"{path} is not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not readable by this process")


class GrpcTlsSettings(BaseSettings):
    """TLS on the platform's own gRPC (LIANLUO_GRPC_TLS_*). With a certificate and key, a
    service serves TLS only; with the CA that signed the platform's certificates, it dials the
    other services over TLS and checks their certificates; with client auth too, it serves
    only callers that present a certificate the CA signed (mutual TLS), and presents its own."""

    model_config = SettingsConfigDict(env_prefix="LIANLUO_", extra="ignore", frozen=True)

    grpc_tls_cert_file: str = ""
    grpc_tls_key_file: Annotated[str, Field(validate_default=True)] = ""
    grpc_tls_ca_file: str = ""
    grpc_tls_client_auth: Annotated[bool, Field(validate_default=True)] = False
    # The name the platform's certificate is issued to, checked in place of the dialled host
    # (a cell's services dial each other by short Service names no certificate can list);
    # empty: the dialled host.
    grpc_tls_server_name: Annotated[str, Field(pattern=r"^$|^[A-Za-z0-9.-]{1,253}$")] = ""

    @field_validator("grpc_tls_cert_file", "grpc_tls_ca_file")
    @classmethod
    def _pem_file(cls, value: str) -> str:
        if value:
            _readable_file(value)
        return value

    @field_validator("grpc_tls_key_file")
    @classmethod
    def _key_of_cert(cls, value: str, info: ValidationInfo) -> str:
        if "grpc_tls_cert_file" not in info.data:
            return value  # the certificate was refused already, with its reason
        cert = info.data["grpc_tls_cert_file"]
        if bool(cert) != bool(value):
            other = "LIANLUO_GRPC_TLS_CERT_FILE" if value else "LIANLUO_GRPC_TLS_KEY_FILE"
            raise ValueError(f"goes with {other}: set both or neither")
        if value:
            _key_of(cert, value, "LIANLUO_GRPC_TLS_CERT_FILE")
        return value

    @field_validator("grpc_tls_client_auth")
    @classmethod
    def _mutual_needs_both(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not (info.data.get("grpc_tls_ca_file") and info.data.get("grpc_tls_key_file")):
            raise ValueError(
                "mutual TLS needs LIANLUO_GRPC_TLS_CA_FILE (to check callers) and the "
                "service's own certificate and key (to be checked)"
            )
        return value


class ServiceSettings(KafkaSecuritySettings, GrpcTlsSettings):
    """What every service needs; each service subclasses it for its own settings."""

    model_config = SettingsConfigDict(env_prefix="LIANLUO_", extra="ignore", frozen=True)

    database_url: Annotated[str, Field(min_length=1)]
    kafka_bootstrap_servers: Annotated[str, Field(min_length=1)]
    # The admin key for platform operations (at least 24 characters, never a placeholder).
    admin_key: SecretStr
    grpc_host: str = "127.0.0.1"
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 50051
    # Prometheus figures on GET /metrics, on the gRPC host. 0 (the default) picks a free port,
    # so the services of one machine (`make run`) never collide; the chart sets 9464.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
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
