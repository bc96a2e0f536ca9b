"""The operator's settings, read from LIANLUO_OPERATOR_* environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # The Secret (key `admin-key`) that gives each cell's services the same admin key.
    admin_key_secret: str = "lianluo-admin-key"  # noqa: S105 - a Secret's name
    kafka_bootstrap_servers: Annotated[str, Field(min_length=1)]
    # The fetch wait of a new cell's services (LIANLUO_KAFKA_FETCH_WAIT_MS); Kafka's default.
    kafka_fetch_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = 500
    # A Postgres URL allowed to CREATE DATABASE; each cell gets its own database on that server.
    database_admin_url: SecretStr
    database_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")] = "lianluo_"
    # The size and template of a new cell.
    cell_max_sessions: Annotated[int, Field(ge=1, le=1_000_000)] = 5000
    cell_max_tenants: Annotated[int, Field(ge=1, le=10_000)] = 50
    cell_replicas: Annotated[int, Field(ge=0, le=100)] = 2
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
    grpc_port: Annotated[int, Field(ge=1, le=65535)] = 50051
    # The S3-compatible bucket the cells' gateways keep attachments in; empty keeps them in
    # each pod's own volume, which a restart loses. The Secret holds access-key-id and
    # secret-access-key (none: the pod's own cloud identity).
    object_store_bucket: str = ""
    object_store_endpoint: str = ""
    object_store_region: str = "us-east-1"
    object_store_secret: str = ""
    rpc_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
