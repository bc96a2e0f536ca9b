"""What handlers share: settings, the Kubernetes client, the tenants API, the placement lock."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from lianluo.operator.kube import Kube
from lianluo.operator.move import CellEnds, Mover
from lianluo.operator.settings import OperatorSettings
from lianluo.operator.template import (
    KafkaSecurity,
    TemplateInputs,
    database_name,
    database_url,
    topic_prefix,
)
from lianluo.operator.tenants_api import TenantsApi
from lianluo.runtime.settings import GrpcTlsSettings

GROUP, VERSION = "lianluo.io", "v1alpha1"
PREFIX = "lianluo.io"
FINALIZER = f"{PREFIX}/cleanup"
CELL_ANNOTATION = f"{PREFIX}/cell"


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: Kube
    tenants: TenantsApi
    # One placement at a time, so two new tenants never both take a cell's last room.
    placement_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The optional API groups the cluster serves (found at start): PDBs and HPAs need them.
    served: frozenset[str] = frozenset()
    # How the operator dials gRPC (LIANLUO_GRPC_TLS_*), which the cells it builds share.
    grpc_tls: GrpcTlsSettings = field(default_factory=GrpcTlsSettings)
    # Moves tenants between cells (set at start; None in tests of other parts).
    mover: Mover | None = None

    def ends(self, cell: str) -> CellEnds:
        """What a move reaches of one of the operator's cells."""
        admin = self.settings.database_admin_url.get_secret_value()
        return CellEnds(
            name=cell,
            database_url=database_url(admin, database_name(self.settings.database_prefix, cell)),
            tenants_address=self.tenants.cell_tenants(cell),
            kafka_bootstrap_servers=self.settings.kafka_bootstrap_servers,
            topic_prefix=topic_prefix(cell),
        )

    @property
    def template(self) -> TemplateInputs:
        s = self.settings
        return TemplateInputs(
            image=s.image,
            kafka_bootstrap_servers=s.kafka_bootstrap_servers,
            admin_key_secret=s.admin_key_secret,
            grpc_port=s.grpc_port,
            default_replicas=s.cell_replicas,
            seats_per_replica=s.seats_per_replica,
            media_service_type=s.media_service_type,
            gateway_service_type=s.gateway_service_type,
            console_service_type=s.console_service_type,
            voice_service_type=s.voice_service_type,
            voice_trunk=s.voice_trunk,
            voice_tls_secret=s.voice_tls_secret,
            gateway_public_url=s.gateway_public_url,
            kafka_fetch_wait_ms=s.kafka_fetch_wait_ms,
            object_store_bucket=s.object_store_bucket,
            object_store_endpoint=s.object_store_endpoint,
            object_store_region=s.object_store_region,
            object_store_secret=s.object_store_secret,
            kafka_security=KafkaSecurity(
                protocol=s.kafka_security_protocol,
                sasl_mechanism=s.kafka_sasl_mechanism,
                sasl_secret=s.kafka_sasl_secret,
                sasl_username_key=s.kafka_sasl_username_key,
                sasl_password_key=s.kafka_sasl_password_key,
                ca_secret=s.kafka_ssl_ca_secret,
                ca_key=s.kafka_ssl_ca_key,
                client_secret=s.kafka_ssl_client_secret,
                cert_key=s.kafka_ssl_cert_key,
                key_key=s.kafka_ssl_key_key,
            ),
            resources={
                service: r.model_dump(exclude_defaults=True)
                for service, r in s.cell_resources.items()
            },
            image_pull_secrets=tuple(s.image_pull_secrets),
            node_selector=s.cell_node_selector,
            tolerations=tuple(t.model_dump(exclude_defaults=True) for t in s.cell_tolerations),
            service_annotations=s.cell_service_annotations,
            network_policies=s.cell_network_policies,
            served=self.served,
            grpc_tls_secret=s.grpc_tls_secret,
            grpc_tls_server_name=self.grpc_tls.grpc_tls_server_name,
            grpc_tls_client_auth=self.grpc_tls.grpc_tls_client_auth,
            autoscaling=s.cell_autoscaling,
            autoscaling_factor=s.cell_autoscaling_factor,
            autoscaling_cpu_percent=s.cell_autoscaling_cpu_percent,
            autoscaling_on_load=s.cell_autoscaling_on_load,
            autoscaling_lag=s.cell_autoscaling_lag,
        )


def notice(body: kopf.Body, reason: str, message: str) -> None:
    """A Normal Event on the object. Posted whatever level kopf posts its own log messages at
    (WARNING): those are a handler's or timer's every success."""
    kopf.event(body, type="Normal", reason=reason, message=message)


def runtime(memo: Any) -> Runtime:
    found = getattr(memo, "runtime", None)
    if not isinstance(found, Runtime):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return found


def login() -> kopf.ConnectionInfo:
    """The same credentials kopf finds: the pod's service account, else the kubeconfig."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
    if info is None:
        raise kopf.LoginError("no service account and no kubeconfig to reach the API server")
    return info


def configure(settings: kopf.OperatorSettings) -> None:
    """Our own finalizer and annotation prefixes, and Events for kopf's warnings and errors."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # kopf's own messages become Events only from WARNING: a timer's "succeeded" every few
    # seconds would bury the Events that matter (ours are posted explicitly).
    settings.posting.level = logging.WARNING
    # No watching of the cluster's namespaces or CRDs: its resources exist before it starts
    # (the chart installs the CRDs), and the chart's role, namespaced, allows neither.
    settings.scanning.disabled = True
    # Watches are renewed every minute, so a connection dropped without notice costs at most that.
    settings.watching.server_timeout = 60
