"""The operator's settings, read from LIANLUO_OPERATOR_* environment variables."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lianluo.operator.template import SERVICES

# A Kubernetes object's name, and a resource quantity ("250m", "1Gi"): refused at the start,
# not when a cell's pods are refused by the API server.
_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|[KMGTPE]i?)?$")]
_CellName = Annotated[str, Field(pattern=_NAME)]


class Toleration(BaseModel):
    """A pod toleration, as Kubernetes takes it (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    tolerationSeconds: int | None = None


class Resources(BaseModel):
    """A container's requests and limits ({"cpu": "250m", "memory": "1Gi"})."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: dict[str, _Quantity] = {}
    limits: dict[str, _Quantity] = {}


class OperatorSettings(BaseSettings):
    """What the operator needs to clone cells and to provision tenants."""

    model_config = SettingsConfigDict(env_prefix="LIANLUO_OPERATOR_", extra="ignore", frozen=True)

    # The one image that runs every service (`lianluo serve <service>`).
    image: Annotated[str, Field(min_length=1)] = "lianluo:0.1.0"
    # The global plane's tenants service, and an admin key for it.
    tenants_address: Annotated[str, Field(min_length=1)]
    admin_key: SecretStr
    # Where a cell's own tenants service answers ("{cell}" is replaced; the cell's Service is
    # "<cell>-tenants"). Empty: the global one serves every cell (a single-plane install).
    cell_tenants_address: str = "{cell}-tenants:50051"
    # Cells whose tenants service answers elsewhere than that (JSON: {"cell-3": "host:port"}),
    # such as a cell run outside this cluster.
    cell_addresses: dict[_CellName, Annotated[str, Field(min_length=1)]] = {}
    # The Secret (key `admin-key`) that gives each cell's services the same admin key.
    admin_key_secret: str = "lianluo-admin-key"  # noqa: S105 - a Secret's name
    kafka_bootstrap_servers: Annotated[str, Field(min_length=1)]
    # The fetch wait of a new cell's services (LIANLUO_KAFKA_FETCH_WAIT_MS); Kafka's default.
    kafka_fetch_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = 500
    # How a new cell's services reach Kafka beyond its address (their LIANLUO_KAFKA_*
    # settings): the protocol and mechanism, and Secrets by name, whose contents the operator
    # never reads. The checks below read the protocol, so it comes first.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    # The Secret with the SASL username and password, under these keys.
    kafka_sasl_secret: Annotated[str, Field(validate_default=True)] = ""
    kafka_sasl_username_key: Annotated[str, Field(min_length=1)] = "username"
    kafka_sasl_password_key: Annotated[str, Field(min_length=1)] = "password"  # noqa: S105
    # A Secret with the CA bundle (PEM) that signed the brokers' certificates; empty: the
    # image's trust store, which knows the public CAs a managed Kafka uses.
    kafka_ssl_ca_secret: str = ""
    kafka_ssl_ca_key: Annotated[str, Field(min_length=1)] = "ca.crt"
    # A Secret with a client certificate and its key (PEM), for brokers that authenticate
    # clients by TLS (a Strimzi KafkaUser's Secret holds user.crt and user.key).
    kafka_ssl_client_secret: str = ""
    kafka_ssl_cert_key: Annotated[str, Field(min_length=1)] = "tls.crt"
    kafka_ssl_key_key: Annotated[str, Field(min_length=1)] = "tls.key"
    # A Postgres URL allowed to CREATE DATABASE; each cell gets its own database on that server.
    database_admin_url: SecretStr
    database_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")] = "lianluo_"
    # The size and template of a new cell.
    cell_max_sessions: Annotated[int, Field(ge=1, le=1_000_000)] = 5000
    cell_max_tenants: Annotated[int, Field(ge=1, le=10_000)] = 50
    cell_replicas: Annotated[int, Field(ge=0, le=100)] = 2
    # A cell's services get one replica per this many seats of its tenants, above cell_replicas.
    seats_per_replica: Annotated[int, Field(ge=1, le=100_000)] = 250
    template_version: Annotated[str, Field(pattern=r"^v[0-9]+$")] = "v1"
    # ClusterIP behind an Ingress or gateway, or LoadBalancer / NodePort to expose media directly.
    media_service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    # The same for the channel gateway (web chat and channel webhooks, over HTTP).
    gateway_service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    # The same for the web console (people's pages, over HTTP).
    console_service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    # The same for the voice service's SIP port (UDP and TCP).
    voice_service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    # The SIP trunk the cells' voice services dial callbacks through, "host:port"; empty: none.
    voice_trunk: Annotated[str, Field(pattern=r"^$|^[A-Za-z0-9.-]+:[0-9]{1,5}$")] = ""
    # A kubernetes.io/tls Secret for the voice services' SIP over TLS (port 5061); empty: none.
    voice_tls_secret: Annotated[
        str, Field(pattern=r"^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    ] = ""
    # Where people outside the cluster reach each cell's gateway (recording exports' links),
    # "{cell}" standing for the cell's name; empty: the gateway's in-cluster Service.
    gateway_public_url: Annotated[
        str, Field(pattern=r"^$|^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=200)
    ] = ""
    grpc_port: Annotated[int, Field(ge=1, le=65535)] = 50051
    # The S3-compatible bucket the cells' gateways keep attachments in; empty keeps them in
    # each pod's own volume, which a restart loses. The Secret holds access-key-id and
    # secret-access-key (none: the pod's own cloud identity).
    object_store_bucket: str = ""
    object_store_endpoint: str = ""
    object_store_region: str = "us-east-1"
    object_store_secret: str = ""
    rpc_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    # Given to every pod of every cell (JSON in the environment, as the chart renders them):
    # per service, its requests and limits in place of the template's; the Secrets to pull the
    # image with; where the pods may run; per exposed service, its Service's annotations.
    cell_resources: dict[str, Resources] = {}
    image_pull_secrets: list[Annotated[str, Field(pattern=_NAME)]] = []
    cell_node_selector: dict[str, str] = {}
    cell_tolerations: list[Toleration] = []
    cell_service_annotations: dict[str, dict[str, str]] = {}
    # A NetworkPolicy per cell service (docs/operator.md); off where another policy layer rules.
    cell_network_policies: bool = True
    # The Secret with the platform's gRPC certificate, key and CA, which every cell service
    # mounts; its server name and client auth are the operator's own LIANLUO_GRPC_TLS_* (it
    # dials the cells' tenants services with them). Empty: the cells' gRPC is plaintext.
    grpc_tls_secret: str = ""
    # A HorizontalPodAutoscaler per cell service (not voice) on CPU, from the replicas the
    # cell's seats need up to this factor of them; needs autoscaling/v2 and a metrics server.
    cell_autoscaling: bool = False
    cell_autoscaling_factor: Annotated[int, Field(ge=2, le=20)] = 3
    cell_autoscaling_cpu_percent: Annotated[int, Field(ge=10, le=100)] = 70
    # Also on load: media's open streams (the seats of a replica) and the consumers' lag.
    # Needs the custom metrics API (a Prometheus adapter) to serve them per pod.
    cell_autoscaling_on_load: bool = False
    cell_autoscaling_lag: Annotated[int, Field(ge=1, le=10_000_000)] = 1000

    @field_validator("cell_resources", "cell_service_annotations")
    @classmethod
    def _known_services(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        unknown = sorted(set(value) - set(SERVICES))
        if unknown:
            raise ValueError(f"{info.field_name}: no cell service is named {', '.join(unknown)}")
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("kafka_sasl_secret")
    @classmethod
    def _sasl_secret_with_sasl(cls, value: str, info: ValidationInfo) -> str:
        protocol = info.data.get("kafka_security_protocol")
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL") and not value:
            raise ValueError(
                f"required when LIANLUO_OPERATOR_KAFKA_SECURITY_PROTOCOL is {protocol}: the "
                "Secret with the cells' SASL username and password"
            )
        return value

    @field_validator("kafka_ssl_ca_secret", "kafka_ssl_client_secret")
    @classmethod
    def _tls_secret_with_tls(cls, value: str, info: ValidationInfo) -> str:
        protocol = info.data.get("kafka_security_protocol")
        if value and protocol is not None and protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"is set, but LIANLUO_OPERATOR_KAFKA_SECURITY_PROTOCOL {protocol} does not use "
                "TLS (SSL or SASL_SSL does)"
            )
        return value
