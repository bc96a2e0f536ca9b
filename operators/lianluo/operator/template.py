"""The cell template: every child object of a Cell, as a pure function of its spec."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lianluo.operator.surge import replicas_for

SERVICES = (
    "tenants",
    "media",
    "ivr",
    "acd",
    "recording",
    "notification",
    "gateway",
    "console",
    "voice",
)
# The services that reach the cell's objects: the gateway (files) and voice (calls) keep them,
# recording purges them with their records. A bucket, else a volume of each pod's own, which
# no other pod sees: a cell needs the bucket for a purge to reach its files and calls.
STORES = ("gateway", "voice", "recording")
# A phone's registration and the calls bridged to it live in one voice process, so a cell runs
# at most one voice replica (docs/voice.md).
MAX_REPLICAS = {"voice": 1}
# The seats one replica of each service is given by default (LIANLUO_OPERATOR_SEATS_PER_REPLICA):
# a starting point, to be set from a surge campaign on the cluster's own nodes.
SEATS_PER_REPLICA = 250
MANAGED_BY = "lianluo-operator"
PDB_API = "policy/v1"
HPA_API = "autoscaling/v2"
CELL_LABEL = "lianluo.io/cell"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class KafkaSecurity:
    """How a cell's services reach Kafka beyond its address: the protocol and SASL mechanism,
    and the Secrets with the credentials and TLS files, by name (never their contents)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_secret: str = ""
    sasl_username_key: str = "username"
    sasl_password_key: str = "password"  # noqa: S105 - a key's name
    # A Secret with the CA bundle; empty: the image's trust store.
    ca_secret: str = ""
    ca_key: str = "ca.crt"
    # A Secret with a client certificate and its key; empty: none is presented.
    client_secret: str = ""
    cert_key: str = "tls.crt"
    key_key: str = "tls.key"

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class TemplateInputs:
    """What the template needs beyond the Cell itself (from the operator's settings)."""

    image: str
    kafka_bootstrap_servers: str
    admin_key_secret: str
    grpc_port: int = 50051
    default_replicas: int = 2
    # A cell's services get a replica per this many seats of its tenants (spec.seats).
    seats_per_replica: int = SEATS_PER_REPLICA
    # Every service's Prometheus figures (GET /metrics): a port named "metrics" on its pods and
    # its Service, which the chart's ServiceMonitor scrapes.
    metrics_port: int = 9464
    # How a cell's media Service is exposed: customers and agents hold their streams on it.
    media_service_type: str = "ClusterIP"
    # How a cell's channel gateway is exposed: customers' browsers and channels reach it over HTTP.
    gateway_service_type: str = "ClusterIP"
    # The gateway's base URL outside the cluster, "{cell}" for the cell's name; empty: its
    # Service inside the cluster.
    gateway_public_url: str = ""
    gateway_http_port: int = 8088
    gateway_smtp_port: int = 2525
    # How a cell's web console is exposed: people's browsers reach its pages over HTTP (behind
    # an Ingress that ends TLS: its session cookies are Secure).
    console_service_type: str = "ClusterIP"
    console_http_port: int = 8089
    # How a cell's voice service is exposed: phones and trunks reach its SIP port (UDP and TCP).
    # RTP goes to the pod's own address, from the range below.
    voice_service_type: str = "ClusterIP"
    voice_sip_port: int = 5060
    voice_rtp_ports: str = "20000-20999"
    # A SIP trunk for calls out (callbacks), "host:port"; empty: none is dialled.
    voice_trunk: str = ""
    # The Secret (tls.crt, tls.key) of SIP over TLS, served on its own port; empty: none.
    voice_tls_secret: str = ""
    voice_tls_port: int = 5061
    # LIANLUO_KAFKA_FETCH_WAIT_MS of the cell's services: the first cell's (the chart's value).
    kafka_fetch_wait_ms: int = 500
    # Where the gateways and voice keep objects: a bucket, else a volume of each pod.
    object_store_bucket: str = ""
    object_store_endpoint: str = ""
    object_store_region: str = "us-east-1"
    # A Secret with access-key-id and secret-access-key; empty: the pod's cloud identity.
    object_store_secret: str = ""
    kafka_security: KafkaSecurity = KafkaSecurity()
    # Per service, what replaces its RESOURCES entry (requests and limits).
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Names of Secrets to pull the image with, given to every pod of the cell.
    image_pull_secrets: tuple[str, ...] = ()
    # Where the cells' pods may run.
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Manifest, ...] = ()
    # A NetworkPolicy per service: only the platform's own pods on gRPC, clients on their ports.
    network_policies: bool = True
    # TLS on the cell's gRPC: the Secret (tls.crt, tls.key, ca.crt) every service mounts, the
    # name its certificate is issued to, and whether callers must present one (mutual TLS).
    grpc_tls_secret: str = ""
    grpc_tls_server_name: str = ""
    grpc_tls_client_auth: bool = False
    # The API groups the cluster serves that the template may use: a PodDisruptionBudget needs
    # policy/v1 (Kubernetes 1.21), a HorizontalPodAutoscaler autoscaling/v2 (1.23).
    served: frozenset[str] = frozenset()
    # A HorizontalPodAutoscaler per service (not voice) on CPU: from the replicas the cell's
    # seats need up to `autoscaling_factor` times them.
    autoscaling: bool = False
    autoscaling_factor: int = 3
    autoscaling_cpu_percent: int = 70
    # Also scale on load (needs a custom metrics adapter over Prometheus): media on the
    # streams a replica holds (a seat's worth each), the consumers on their lag.
    autoscaling_on_load: bool = False
    autoscaling_lag: int = 1000
    # Per exposed service (media, gateway, console, voice), its Service's annotations: a
    # cloud's load balancer settings (internal or external, TLS, source ranges).
    service_annotations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


# What each service asks for and may use, unless the operator's settings say otherwise
# (LIANLUO_OPERATOR_CELL_RESOURCES): starting points from the benchmarks in docs/performance.md,
# where media holds customers' and agents' streams, voice mixes RTP, and the gateway, voice and
# recording handle files. No CPU limit: throttling a stream's relay costs more than sharing a core.
RESOURCES: dict[str, Manifest] = {
    service: {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": limit}}
    for service, (cpu, memory, limit) in {
        "tenants": ("100m", "128Mi", "384Mi"),
        "media": ("250m", "256Mi", "1Gi"),
        "ivr": ("100m", "128Mi", "384Mi"),
        "acd": ("200m", "192Mi", "512Mi"),
        "recording": ("100m", "192Mi", "768Mi"),
        "notification": ("100m", "128Mi", "384Mi"),
        "gateway": ("150m", "192Mi", "1Gi"),
        "console": ("100m", "128Mi", "384Mi"),
        "voice": ("250m", "256Mi", "768Mi"),
    }.items()
}

# Every pod of a cell passes Pod Security "restricted": not root, the runtime's seccomp profile.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# The root is read-only; what a library writes to /tmp goes to a volume of the pod's own.
TMP = ({"name": "tmp", "emptyDir": {}}, {"name": "tmp", "mountPath": "/tmp"})  # noqa: S108

# Where a service of STORES without a bucket keeps objects: an emptyDir (the root is
# read-only).
OBJECTS_PATH = "/var/lib/lianluo/objects"
# Where the Kafka TLS files of the Secrets are mounted, read-only.
KAFKA_TLS_PATH = "/etc/lianluo/kafka"
# Where the platform's gRPC certificate, key and CA are mounted, read-only.
GRPC_TLS_PATH = "/etc/lianluo/grpc"
# Where the voice service's SIP certificate is mounted, read-only.
SIP_TLS_PATH = "/etc/lianluo/sip"


def topic_prefix(cell: str) -> str:
    """The prefix of the cell's own topics."""
    return f"{cell}."


def database_name(prefix: str, cell: str) -> str:
    """The cell's own Postgres database, for example lianluo_cell_1."""
    return prefix + cell.replace("-", "_")


def database_url(admin_url: str, database: str) -> str:
    """The admin URL with the cell's database in place of its own; its options (sslmode and
    the like) are kept, as a managed Postgres refuses connections without them."""
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def database_secret_name(cell: str) -> str:
    """The Secret with the admin URL of the cell's database: only the migrate Job uses it."""
    return f"{cell}-database"


def service_secret_name(cell: str, service: str) -> str:
    """The Secret with the URL a service of the cell connects with, as its own role."""
    return f"{cell}-database-{service}"


# Postgres truncates longer identifiers, which would make two roles one.
_MAX_IDENTIFIER = 63


def role_name(database: str, service: str) -> str:
    """A service's own Postgres role in the cell's database; roles are per server, so the
    database's name is in it."""
    role = f"{database}_{service}"
    if len(role) > _MAX_IDENTIFIER:
        raise ValueError(f"the database role {role} is longer than Postgres allows (63)")
    return role


def role_password(admin_url: str, role: str) -> str:
    """The role's password, derived from the admin credential: the operator sets it again at
    every reconcile without ever reading a Secret back, and a new admin credential gives every
    role a new one."""
    key = admin_url.encode()
    return hmac.new(key, f"lianluo.database-role/{role}".encode(), hashlib.sha256).hexdigest()


def service_database_url(admin_url: str, database: str, service: str) -> str:
    """The URL a service of the cell connects with: its own role and password, on the cell's
    database, with the admin URL's host and options."""
    role = role_name(database, service)
    parts = urllib.parse.urlsplit(database_url(admin_url, database))
    host = parts.netloc.rpartition("@")[2]
    user = urllib.parse.quote(role, safe="")
    return urllib.parse.urlunsplit(
        parts._replace(netloc=f"{user}:{role_password(admin_url, role)}@{host}")
    )


def database_secrets(cell: str, admin_url: str, database: str) -> list[Manifest]:
    """The cell's database Secrets: the admin URL for the migrate Job, and one URL per service
    with the service's own role."""
    urls = {database_secret_name(cell): database_url(admin_url, database)}
    for service in SERVICES:
        urls[service_secret_name(cell, service)] = service_database_url(
            admin_url, database, service
        )
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {CELL_LABEL: cell}},
            "type": "Opaque",
            "stringData": {"url": url},
        }
        for name, url in urls.items()
    ]


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
        "LIANLUO_TOPIC_PREFIX": topic_prefix(cell),
        "LIANLUO_KAFKA_BOOTSTRAP_SERVERS": inputs.kafka_bootstrap_servers,
        "LIANLUO_KAFKA_FETCH_WAIT_MS": str(inputs.kafka_fetch_wait_ms),
        **_kafka_settings(inputs.kafka_security),
        "LIANLUO_GRPC_HOST": "0.0.0.0",  # noqa: S104 - a pod listens on its own address
        "LIANLUO_GRPC_PORT": str(inputs.grpc_port),
        "LIANLUO_METRICS_PORT": str(inputs.metrics_port),
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
    if service == "notification":
        settings["LIANLUO_NOTIFICATION_GATEWAY_ADDRESS"] = f"{cell}-gateway:{inputs.grpc_port}"
    if service == "recording":
        # Export links open at the cell's gateway: where people reach it from outside when
        # the chart says, else as its Service is reached in the cluster.
        settings["LIANLUO_RECORDING_LINK_BASE_URL"] = (
            inputs.gateway_public_url.replace("{cell}", cell).rstrip("/")
            or f"http://{cell}-gateway:{inputs.gateway_http_port}"
        )
    if service == "voice":
        settings |= {
            "LIANLUO_VOICE_SIP_HOST": "0.0.0.0",  # noqa: S104 - the pod's own address
            "LIANLUO_VOICE_SIP_PORT": str(inputs.voice_sip_port),
            "LIANLUO_VOICE_RTP_PORTS": inputs.voice_rtp_ports,
            "LIANLUO_VOICE_TRUNK": inputs.voice_trunk,
            **(
                {
                    "LIANLUO_VOICE_TLS_PORT": str(inputs.voice_tls_port),
                    "LIANLUO_VOICE_TLS_CERT_FILE": f"{SIP_TLS_PATH}/tls.crt",
                    "LIANLUO_VOICE_TLS_KEY_FILE": f"{SIP_TLS_PATH}/tls.key",
                }
                if inputs.voice_tls_secret
                else {}
            ),
            **{
                f"LIANLUO_VOICE_{name.upper()}_ADDRESS": f"{cell}-{name}:{inputs.grpc_port}"
                for name in ("tenants", "media", "gateway", "acd")
            },
        }
    if service in STORES:
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
                for name in ("tenants", "media", "ivr", "acd", "gateway", "voice")
            },
        }
    if inputs.grpc_tls_secret:
        settings |= {
            "LIANLUO_GRPC_TLS_CERT_FILE": f"{GRPC_TLS_PATH}/tls.crt",
            "LIANLUO_GRPC_TLS_KEY_FILE": f"{GRPC_TLS_PATH}/tls.key",
            "LIANLUO_GRPC_TLS_CA_FILE": f"{GRPC_TLS_PATH}/ca.crt",
            "LIANLUO_GRPC_TLS_CLIENT_AUTH": str(inputs.grpc_tls_client_auth).lower(),
            "LIANLUO_GRPC_TLS_SERVER_NAME": inputs.grpc_tls_server_name,
        }
    return settings


def _kafka_settings(kafka: KafkaSecurity) -> dict[str, str]:
    """The LIANLUO_KAFKA_* settings of the protocol and the mounted TLS files; none for
    PLAINTEXT, the services' default, so a cell without security keeps its settings."""
    if kafka.protocol == "PLAINTEXT":
        return {}
    settings = {"LIANLUO_KAFKA_SECURITY_PROTOCOL": kafka.protocol}
    if kafka.sasl:
        settings["LIANLUO_KAFKA_SASL_MECHANISM"] = kafka.sasl_mechanism
    if kafka.tls and kafka.ca_secret:
        settings["LIANLUO_KAFKA_SSL_CA_FILE"] = f"{KAFKA_TLS_PATH}/ca/ca.crt"
    if kafka.tls and kafka.client_secret:
        settings["LIANLUO_KAFKA_SSL_CERT_FILE"] = f"{KAFKA_TLS_PATH}/client/tls.crt"
        settings["LIANLUO_KAFKA_SSL_KEY_FILE"] = f"{KAFKA_TLS_PATH}/client/tls.key"
    return settings


def _kafka_volumes(kafka: KafkaSecurity) -> list[tuple[Manifest, Manifest]]:
    """The Secrets with Kafka TLS files, as (volume, mount) pairs at the paths the settings
    name; a key missing from its Secret keeps the pod from starting, and says which."""
    pairs: list[tuple[Manifest, Manifest]] = []
    files = {
        "kafka-ca": (kafka.ca_secret, {kafka.ca_key: "ca.crt"}),
        "kafka-client": (
            kafka.client_secret,
            {kafka.cert_key: "tls.crt", kafka.key_key: "tls.key"},
        ),
    }
    for name, (secret, items) in files.items():
        if kafka.tls and secret:
            volume = {
                "name": name,
                "secret": {
                    "secretName": secret,
                    "items": [{"key": key, "path": path} for key, path in items.items()],
                },
            }
            path = f"{KAFKA_TLS_PATH}/{name.removeprefix('kafka-')}"
            pairs.append((volume, {"name": name, "mountPath": path, "readOnly": True}))
    return pairs


def _secret_env(
    cell: str, service: str, inputs: TemplateInputs, database_secret: str
) -> list[dict[str, Any]]:
    def ref(name: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    env = [
        ref("LIANLUO_DATABASE_URL", database_secret, "url"),
        ref("LIANLUO_ADMIN_KEY", inputs.admin_key_secret, "admin-key"),
    ]
    kafka = inputs.kafka_security
    if kafka.sasl:
        env += [
            ref("LIANLUO_KAFKA_SASL_USERNAME", kafka.sasl_secret, kafka.sasl_username_key),
            ref("LIANLUO_KAFKA_SASL_PASSWORD", kafka.sasl_secret, kafka.sasl_password_key),
        ]
    if service == "voice":
        # Contact headers and SDP name the pod's own address: RTP comes straight to it.
        env.append(
            {
                "name": "LIANLUO_VOICE_PUBLIC_HOST",
                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
            }
        )
    if service in STORES and inputs.object_store_bucket and inputs.object_store_secret:
        secret = inputs.object_store_secret
        env += [
            ref("LIANLUO_OBJECT_STORE_ACCESS_KEY_ID", secret, "access-key-id"),
            ref("LIANLUO_OBJECT_STORE_SECRET_ACCESS_KEY", secret, "secret-access-key"),
        ]
    return env


def _container(
    cell: str, service: str, args: list[str], inputs: TemplateInputs, database_secret: str = ""
) -> Manifest:
    """A service's container; it connects to the database as the service's own role unless
    `database_secret` names another (the migrate Job's admin URL)."""
    database_secret = database_secret or service_secret_name(cell, service)
    return {
        "name": service,
        "image": inputs.image,
        "args": args,
        "envFrom": [{"configMapRef": {"name": f"{cell}-{service}"}}],
        "env": _secret_env(cell, service, inputs, database_secret),
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": inputs.resources.get(service) or RESOURCES.get(service, RESOURCES["tenants"]),
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
    replicas = replicas_of(spec, service, inputs.default_replicas, inputs.seats_per_replica)
    container = _container(cell, service, ["serve", service], inputs)
    container["ports"] = [
        {"name": "grpc", "containerPort": inputs.grpc_port},
        {"name": "metrics", "containerPort": inputs.metrics_port},
    ]
    if service == "gateway":
        container["ports"] += [
            {"name": "http", "containerPort": inputs.gateway_http_port},
            {"name": "smtp", "containerPort": inputs.gateway_smtp_port},
        ]
    if service == "console":
        container["ports"] += [{"name": "http", "containerPort": inputs.console_http_port}]
    if service == "voice":
        container["ports"] += [
            {"name": "sip-udp", "containerPort": inputs.voice_sip_port, "protocol": "UDP"},
            {"name": "sip-tcp", "containerPort": inputs.voice_sip_port, "protocol": "TCP"},
        ]
        if inputs.voice_tls_secret:
            container["ports"].append({"name": "sip-tls", "containerPort": inputs.voice_tls_port})
    volumes: list[Manifest] = [TMP[0]]
    container["volumeMounts"] = [TMP[1]]
    for volume, mount in _kafka_volumes(inputs.kafka_security):
        volumes.append(volume)
        container["volumeMounts"].append(mount)
    if inputs.grpc_tls_secret:
        volumes.append({"name": "grpc-tls", "secret": {"secretName": inputs.grpc_tls_secret}})
        container["volumeMounts"].append(
            {"name": "grpc-tls", "mountPath": GRPC_TLS_PATH, "readOnly": True}
        )
    if service == "voice" and inputs.voice_tls_secret:
        volumes.append({"name": "sip-tls", "secret": {"secretName": inputs.voice_tls_secret}})
        container["volumeMounts"].append(
            {"name": "sip-tls", "mountPath": SIP_TLS_PATH, "readOnly": True}
        )
    if service in STORES and not inputs.object_store_bucket:
        volumes.append({"name": "objects", "emptyDir": {}})
        container["volumeMounts"].append({"name": "objects", "mountPath": OBJECTS_PATH})
    # Ready while the service is SERVING on its gRPC health (its consumers and pool up, and not
    # yet shutting down), read over HTTP: gRPC probes need Kubernetes 1.24. Alive while its gRPC
    # port answers.
    container["readinessProbe"] = {
        "httpGet": {"path": "/healthz", "port": "metrics"},
        "periodSeconds": 5,
    }
    alive = {"tcpSocket": {"port": "grpc"}, "periodSeconds": 5}
    container["livenessProbe"] = alive
    # Liveness waits until the service first listens (migrations and the first reading of the
    # tenant configuration can take a while), up to two minutes.
    container["startupProbe"] = {**alive, "failureThreshold": 24}
    # A change of settings changes the pod template, so the pods roll onto it.
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    scaling: Manifest = {} if _autoscaled(service, inputs) else {"replicas": replicas}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{cell}-{service}", "labels": meta},
        "spec": scaling
        | {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": meta, "annotations": {"lianluo.io/config-hash": digest}},
                "spec": _placement(inputs)
                | {
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _autoscaled(service: str, inputs: TemplateInputs) -> bool:
    """Whether an HPA, not the operator, sets the service's replicas (voice runs one)."""
    return inputs.autoscaling and HPA_API in inputs.served and service not in MAX_REPLICAS


def _scaling(cell: str, spec: dict[str, Any], service: str, inputs: TemplateInputs,
             meta: dict[str, str]) -> list[Manifest]:  # fmt: skip
    """A PodDisruptionBudget (a drain takes one replica at a time) for a service of more than
    one replica, and its HorizontalPodAutoscaler when the cell autoscales."""
    least = replicas_of(spec, service, inputs.default_replicas, inputs.seats_per_replica)
    name, selector = f"{cell}-{service}", {CELL_LABEL: cell, "app.kubernetes.io/name": service}
    found: list[Manifest] = []
    if PDB_API in inputs.served and (least > 1 or _autoscaled(service, inputs)):
        found.append({
            "apiVersion": PDB_API, "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "labels": meta},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        })  # fmt: skip
    if _autoscaled(service, inputs):
        found.append({
            "apiVersion": HPA_API, "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": meta},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                # The seats' replicas are the floor: a surge is there before its load is.
                "minReplicas": max(least, 1),
                "maxReplicas": max(least + 1, least * inputs.autoscaling_factor),
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization",
                    "averageUtilization": inputs.autoscaling_cpu_percent}}},
                    *_load_metrics(service, inputs)],
            },
        })  # fmt: skip
    return found


# What says a replica has too much to do, besides its CPU: the media streams it holds, and
# for a consumer of events the records it has not handled yet.
LOAD_METRICS = {
    "media": "lianluo_media_streams_open",
    **{s: "lianluo_kafka_consumer_lag" for s in ("ivr", "acd", "recording", "notification")},
}


def _load_metrics(service: str, inputs: TemplateInputs) -> list[Manifest]:
    """The per-pod metrics an HPA follows on load (the `pods` kind: the custom metrics API
    must serve them, from the pods' Prometheus endpoints)."""
    name = LOAD_METRICS.get(service)
    if not inputs.autoscaling_on_load or name is None:
        return []
    target = inputs.seats_per_replica if service == "media" else inputs.autoscaling_lag
    return [{"type": "Pods", "pods": {
        "metric": {"name": name},
        "target": {"type": "AverageValue", "averageValue": str(target)},
    }}]  # fmt: skip


def _placement(inputs: TemplateInputs) -> Manifest:
    """Where a cell's pods run and what they pull with: only what the settings give."""
    found: Manifest = {}
    if inputs.image_pull_secrets:
        found["imagePullSecrets"] = [{"name": n} for n in inputs.image_pull_secrets]
    if inputs.node_selector:
        found["nodeSelector"] = dict(inputs.node_selector)
    if inputs.tolerations:
        found["tolerations"] = list(inputs.tolerations)
    return found


def _service(cell: str, service: str, inputs: TemplateInputs, meta: dict[str, str]) -> Manifest:
    kind = {
        "media": inputs.media_service_type,
        "gateway": inputs.gateway_service_type,
        "console": inputs.console_service_type,
        "voice": inputs.voice_service_type,
    }
    ports = [
        {"name": "grpc", "port": inputs.grpc_port, "targetPort": "grpc"},
        {"name": "metrics", "port": inputs.metrics_port, "targetPort": "metrics"},
    ]
    if service == "gateway":
        ports += [
            {"name": "http", "port": inputs.gateway_http_port, "targetPort": "http"},
            {"name": "smtp", "port": inputs.gateway_smtp_port, "targetPort": "smtp"},
        ]
    if service == "console":
        ports += [{"name": "http", "port": inputs.console_http_port, "targetPort": "http"}]
    spec: Manifest = {
        "type": kind.get(service, "ClusterIP"),
        "selector": {CELL_LABEL: cell, "app.kubernetes.io/name": service},
        "ports": ports,
    }
    if service == "voice":
        spec["ports"] += [
            {"name": f"sip-{p.lower()}", "port": inputs.voice_sip_port, "protocol": p,
             "targetPort": f"sip-{p.lower()}"}
            for p in ("UDP", "TCP")
        ]  # fmt: skip
        if inputs.voice_tls_secret:
            spec["ports"].append(
                {"name": "sip-tls", "port": inputs.voice_tls_port, "targetPort": "sip-tls"}
            )
    metadata: Manifest = {"name": f"{cell}-{service}", "labels": meta}
    if inputs.service_annotations.get(service):
        metadata["annotations"] = dict(inputs.service_annotations[service])
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def replicas_of(
    spec: dict[str, Any], service: str, default: int, seats_per_replica: int = SEATS_PER_REPLICA
) -> int:
    """A service's replicas: the spec's (else the default), more when the seats of the cell's
    tenants need more (`spec.seats`, kept by the operator); never more than MAX_REPLICAS."""
    wanted = int(spec.get("replicas", {}).get(service, default))
    wanted = replicas_for(int(spec.get("seats", 0)), seats_per_replica, wanted)
    return min(wanted, MAX_REPLICAS.get(service, wanted))


def migrate_job(cell: str, spec: dict[str, Any], inputs: TemplateInputs) -> Manifest:
    """A Job that runs `lianluo migrate` once: every service's schema and the cell's topics.

    A Job's pod never changes, so the Job is named by what it runs (the image and the cell's
    settings): an upgrade makes a new Job, which migrates the cell again, and the one it
    supersedes is removed."""
    meta = labels(cell, "migrate", spec.get("templateVersion", "v1"))
    # The tenants ConfigMap carries the settings every service of the cell shares.
    # It alone connects as the admin role: it creates the tables the services' roles use.
    container = _container(cell, "tenants", ["migrate"], inputs, database_secret_name(cell))
    container["name"] = "migrate"
    settings = settings_for(cell, spec, "tenants", inputs)
    named: list[Any] = [inputs.image, settings]
    if inputs.kafka_security != KafkaSecurity():
        # Other Secrets are another Job (one that failed on a wrong name is not kept).
        named.append(asdict(inputs.kafka_security))
    digest = hashlib.sha256(json.dumps(named, sort_keys=True).encode())
    kafka = _kafka_volumes(inputs.kafka_security)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{cell}-migrate-{digest.hexdigest()[:10]}", "labels": meta},
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": meta},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY,
                    "containers": [{**container, "volumeMounts": [TMP[1], *(m for _, m in kafka)]}],
                    "volumes": [TMP[0], *(v for v, _ in kafka)],
                },
            },
        },
    }


def _network_policy(
    cell: str, service: str, inputs: TemplateInputs, meta: dict[str, str]
) -> Manifest:
    """Who may reach a service's pods: the platform's own pods (this release's, in this
    namespace: the cell's other services, the operator, the global plane) on gRPC; anyone on
    the metrics port (Prometheus runs in its own namespace); and anyone on the ports clients
    use, which only media, gateway, console and voice have. Everything else is refused.
    Outgoing traffic (Kafka, Postgres, the object store, SIP trunks, webhooks) is left open:
    those are often managed services outside the cluster, at addresses a policy cannot name."""
    platform = {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "lianluo"}}}
    anyone = [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0"}}]
    rules: list[Manifest] = [
        {"from": [platform], "ports": [{"protocol": "TCP", "port": inputs.grpc_port}]},
        {"from": anyone, "ports": [{"protocol": "TCP", "port": inputs.metrics_port}]},
    ]
    public: dict[str, list[tuple[str, int | None]]] = {
        "media": [("TCP", inputs.grpc_port)],
        "gateway": [("TCP", inputs.gateway_http_port), ("TCP", inputs.gateway_smtp_port)],
        "console": [("TCP", inputs.console_http_port)],
        # SIP on its port; RTP on the pod's own ports, any of them (a range needs endPort,
        # which Kubernetes before 1.25 drops without a word, letting one port through).
        "voice": [("TCP", inputs.voice_sip_port), ("UDP", None)]
        + ([("TCP", inputs.voice_tls_port)] if inputs.voice_tls_secret else []),
    }
    if service in public:
        ports: list[Manifest] = [
            {"protocol": p} | ({"port": n} if n else {}) for p, n in public[service]
        ]
        rules.append({"from": anyone, "ports": ports})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{cell}-{service}", "labels": meta},
        "spec": {
            "podSelector": {"matchLabels": {CELL_LABEL: cell, "app.kubernetes.io/name": service}},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def cell_children(cell: str, spec: dict[str, Any], inputs: TemplateInputs) -> list[Manifest]:
    """ConfigMaps, Deployments, Services and NetworkPolicies for the cell's services, then the
    migrate Job."""
    version = spec.get("templateVersion", "v1")
    children: list[Manifest] = []
    for service in SERVICES:
        config = settings_for(cell, spec, service, inputs)
        meta = labels(cell, service, version)
        children.append(_config_map(cell, service, config, meta))
        children.append(_deployment(cell, spec, service, inputs, config))
        children.append(_service(cell, service, inputs, meta))
        if inputs.network_policies:
            children.append(_network_policy(cell, service, inputs, meta))
        children += _scaling(cell, spec, service, inputs, meta)
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
            "replicas": {s: replicas_of({}, s, replicas) for s in SERVICES},
            "templateVersion": version,
        },
    }
