"""The cell template: every child object of a Cell, as a pure function of its spec."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

SERVICES = ("tenants", "media", "ivr", "acd", "recording", "notification", "gateway", "console")
MANAGED_BY = "lianluo-operator"
CELL_LABEL = "lianluo.io/cell"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class TemplateInputs:
    """What the template needs beyond the Cell itself (from the operator's settings)."""

    image: str
    kafka_bootstrap_servers: str
    admin_key_secret: str
    grpc_port: int = 50051
    default_replicas: int = 2
    # How a cell's media Service is exposed: customers and agents hold their streams on it.
    media_service_type: str = "ClusterIP"
    # How a cell's channel gateway is exposed: customers' browsers and channels reach it over HTTP.
    gateway_service_type: str = "ClusterIP"
    gateway_http_port: int = 8088
    gateway_smtp_port: int = 2525
    # How a cell's web console is exposed: people's browsers reach its pages over HTTP (behind
    # an Ingress that ends TLS: its session cookies are Secure).
    console_service_type: str = "ClusterIP"
    console_http_port: int = 8089
    # LIANLUO_KAFKA_FETCH_WAIT_MS of the cell's services: the first cell's (the chart's value).
    kafka_fetch_wait_ms: int = 500
    # Where the gateways keep attachments: a bucket, else a volume of each pod.
    object_store_bucket: str = ""
    object_store_endpoint: str = ""
    object_store_region: str = "us-east-1"
    # A Secret with access-key-id and secret-access-key; empty: the pod's cloud identity.
    object_store_secret: str = ""


# Where a gateway without a bucket keeps attachments: an emptyDir (the root is read-only).
OBJECTS_PATH = "/var/lib/lianluo/objects"


def database_name(prefix: str, cell: str) -> str:
    """The cell's own Postgres database, for example lianluo_cell_1."""
    return prefix + cell.replace("-", "_")


def database_secret_name(cell: str) -> str:
    return f"{cell}-database"


def labels(cell: str, service: str, version: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": service,
        "app.kubernetes.io/instance": cell,
        "app.kubernetes.io/component": service,
        "app.kubernetes.io/part-of": "lianluo",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": version,
        CELL_LABEL: cell,
    }


def settings_for(
    cell: str, spec: dict[str, Any], service: str, inputs: TemplateInputs
) -> dict[str, str]:
    """The LIANLUO_* settings a service of this cell runs with (none of them secret)."""
    capacity = spec.get("capacity", {})
    settings = {
        "LIANLUO_TOPIC_PREFIX": f"{cell}.",
        "LIANLUO_KAFKA_BOOTSTRAP_SERVERS": inputs.kafka_bootstrap_servers,
        "LIANLUO_KAFKA_FETCH_WAIT_MS": str(inputs.kafka_fetch_wait_ms),
        "LIANLUO_GRPC_HOST": "0.0.0.0",  # noqa: S104 - a pod listens on its own address
        "LIANLUO_GRPC_PORT": str(inputs.grpc_port),
        # The migrate Job creates schemas and topics once, before the services take traffic.
        "LIANLUO_AUTO_MIGRATE": "false",
        "LIANLUO_CELL": cell,
        "LIANLUO_CELL_MAX_SESSIONS": str(capacity.get("maxSessions", "")),
        "LIANLUO_CELL_MAX_TENANTS": str(capacity.get("maxTenants", "")),
        "OTEL_SERVICE_NAME": service,
    }
    if service == "gateway":
        settings |= {
            "LIANLUO_GATEWAY_HTTP_HOST": "0.0.0.0",  # noqa: S104 - the pod's own address
            "LIANLUO_GATEWAY_HTTP_PORT": str(inputs.gateway_http_port),
            "LIANLUO_GATEWAY_SMTP_HOST": "0.0.0.0",  # noqa: S104 - the pod's own address
            "LIANLUO_GATEWAY_SMTP_PORT": str(inputs.gateway_smtp_port),
            "LIANLUO_GATEWAY_TENANTS_ADDRESS": f"{cell}-tenants:{inputs.grpc_port}",
            "LIANLUO_GATEWAY_MEDIA_ADDRESS": f"{cell}-media:{inputs.grpc_port}",
        }
        if inputs.object_store_bucket:
            settings |= {
                "LIANLUO_OBJECT_STORE_BUCKET": inputs.object_store_bucket,
                "LIANLUO_OBJECT_STORE_ENDPOINT": inputs.object_store_endpoint,
                "LIANLUO_OBJECT_STORE_REGION": inputs.object_store_region,
            }
        else:
            settings["LIANLUO_OBJECT_STORE_PATH"] = OBJECTS_PATH
    if service == "console":
        settings |= {
            "LIANLUO_CONSOLE_HTTP_HOST": "0.0.0.0",  # noqa: S104 - the pod's own address
            "LIANLUO_CONSOLE_HTTP_PORT": str(inputs.console_http_port),
            **{
                f"LIANLUO_CONSOLE_{name.upper()}_ADDRESS": f"{cell}-{name}:{inputs.grpc_port}"
                for name in ("tenants", "media", "ivr", "acd", "gateway")
            },
        }
    return settings


def _secret_env(cell: str, service: str, inputs: TemplateInputs) -> list[dict[str, Any]]:
    def ref(name: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    env = [
        ref("LIANLUO_DATABASE_URL", database_secret_name(cell), "url"),
        ref("LIANLUO_ADMIN_KEY", inputs.admin_key_secret, "admin-key"),
    ]
    if service == "gateway" and inputs.object_store_bucket and inputs.object_store_secret:
        secret = inputs.object_store_secret
        env += [
            ref("LIANLUO_OBJECT_STORE_ACCESS_KEY_ID", secret, "access-key-id"),
            ref("LIANLUO_OBJECT_STORE_SECRET_ACCESS_KEY", secret, "secret-access-key"),
        ]
    return env


def _container(cell: str, service: str, args: list[str], inputs: TemplateInputs) -> Manifest:
    return {
        "name": service,
        "image": inputs.image,
        "args": args,
        "envFrom": [{"configMapRef": {"name": f"{cell}-{service}"}}],
        "env": _secret_env(cell, service, inputs),
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
    }


def _config_map(cell: str, service: str, data: dict[str, str], meta: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{cell}-{service}", "labels": meta},
        "data": data,
    }


def _deployment(
    cell: str, spec: dict[str, Any], service: str, inputs: TemplateInputs, config: dict[str, str]
) -> Manifest:
    version = spec.get("templateVersion", "v1")
    meta = labels(cell, service, version)
    selector = {CELL_LABEL: cell, "app.kubernetes.io/name": service}
    replicas = spec.get("replicas", {}).get(service, inputs.default_replicas)
    container = _container(cell, service, ["serve", service], inputs)
    container["ports"] = [{"name": "grpc", "containerPort": inputs.grpc_port}]
    if service == "gateway":
        container["ports"] += [
            {"name": "http", "containerPort": inputs.gateway_http_port},
            {"name": "smtp", "containerPort": inputs.gateway_smtp_port},
        ]
    if service == "console":
        container["ports"] += [{"name": "http", "containerPort": inputs.console_http_port}]
    volumes = []
    if service == "gateway" and not inputs.object_store_bucket:
        volumes = [{"name": "objects", "emptyDir": {}}]
        container["volumeMounts"] = [{"name": "objects", "mountPath": OBJECTS_PATH}]
    # A TCP probe works on every API version this runs on (gRPC probes need 1.24 or later).
    probe = {"tcpSocket": {"port": "grpc"}, "periodSeconds": 5}
    container["readinessProbe"] = probe
    container["livenessProbe"] = {**probe, "initialDelaySeconds": 15}
    # A change of settings changes the pod template, so the pods roll onto it.
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{cell}-{service}", "labels": meta},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": meta, "annotations": {"lianluo.io/config-hash": digest}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [container],
                    **({"volumes": volumes} if volumes else {}),
                },
            },
        },
    }


def _service(cell: str, service: str, inputs: TemplateInputs, meta: dict[str, str]) -> Manifest:
    kind = {
        "media": inputs.media_service_type,
        "gateway": inputs.gateway_service_type,
        "console": inputs.console_service_type,
    }
    ports = [{"name": "grpc", "port": inputs.grpc_port, "targetPort": "grpc"}]
    if service == "gateway":
        ports += [
            {"name": "http", "port": inputs.gateway_http_port, "targetPort": "http"},
            {"name": "smtp", "port": inputs.gateway_smtp_port, "targetPort": "smtp"},
        ]
    if service == "console":
        ports += [{"name": "http", "port": inputs.console_http_port, "targetPort": "http"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{cell}-{service}", "labels": meta},
        "spec": {
            "type": kind.get(service, "ClusterIP"),
            "selector": {CELL_LABEL: cell, "app.kubernetes.io/name": service},
            "ports": ports,
        },
    }


def migrate_job(cell: str, spec: dict[str, Any], inputs: TemplateInputs) -> Manifest:
    """A Job that runs `lianluo migrate` once: every service's schema and the cell's topics."""
    meta = labels(cell, "migrate", spec.get("templateVersion", "v1"))
    # The tenants ConfigMap carries the settings every service of the cell shares.
    container = _container(cell, "tenants", ["migrate"], inputs)
    container["name"] = "migrate"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{cell}-migrate", "labels": meta},
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": meta},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [container],
                },
            },
        },
    }


def cell_children(cell: str, spec: dict[str, Any], inputs: TemplateInputs) -> list[Manifest]:
    """ConfigMaps, Deployments and Services for the cell's services, then the migrate Job."""
    version = spec.get("templateVersion", "v1")
    children: list[Manifest] = []
    for service in SERVICES:
        config = settings_for(cell, spec, service, inputs)
        meta = labels(cell, service, version)
        children.append(_config_map(cell, service, config, meta))
        children.append(_deployment(cell, spec, service, inputs, config))
        children.append(_service(cell, service, inputs, meta))
    children.append(migrate_job(cell, spec, inputs))
    return children


def cell_manifest(
    name: str, max_sessions: int, max_tenants: int, replicas: int, version: str
) -> Manifest:
    """A new Cell, as cloned when no cell has room."""
    return {
        "apiVersion": "lianluo.io/v1alpha1",
        "kind": "Cell",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "spec": {
            "capacity": {"maxSessions": max_sessions, "maxTenants": max_tenants},
            "replicas": dict.fromkeys(SERVICES, replicas),
            "templateVersion": version,
        },
    }
