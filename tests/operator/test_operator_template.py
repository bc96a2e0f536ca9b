"""The cell template and readiness rules, as pure functions."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import kubernetes_validate
import pytest

from lianluo.operator.conditions import cell_readiness, set_condition
from lianluo.operator.template import (
    HPA_API,
    PDB_API,
    SERVICES,
    TemplateInputs,
    cell_children,
    cell_manifest,
    database_name,
    database_secrets,
    database_url,
    role_name,
    service_database_url,
)

INPUTS = TemplateInputs("registry.local/lianluo:1.2.3", "kafka:9092", "admin-key", 50051, 2)
SPEC: dict[str, Any] = {
    "capacity": {"maxSessions": 5000, "maxTenants": 50},
    "replicas": {"media": 4},
    "templateVersion": "v3",
}


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    children = cell_children("cell-7", SPEC, INPUTS)
    return {c["metadata"]["name"]: c for c in children if c["kind"] == kind}


def test_each_service_gets_a_deployment_a_service_and_a_config_map() -> None:
    for kind in ("Deployment", "Service", "ConfigMap"):
        assert sorted(_by_kind(kind)) == sorted(f"cell-7-{s}" for s in SERVICES)
    [job] = _by_kind("Job")
    assert job.startswith("cell-7-migrate-")


def test_deployments_run_the_one_image_with_the_cell_settings() -> None:
    deployments = _by_kind("Deployment")
    media = deployments["cell-7-media"]
    container = media["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/lianluo:1.2.3"
    assert container["args"] == ["serve", "media"]
    assert media["spec"]["replicas"] == 4
    assert deployments["cell-7-acd"]["spec"]["replicas"] == 2  # the default
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    config = _by_kind("ConfigMap")["cell-7-media"]["data"]
    assert config["LIANLUO_TOPIC_PREFIX"] == "cell-7."
    assert config["LIANLUO_CELL_MAX_SESSIONS"] == "5000"
    assert config["LIANLUO_AUTO_MIGRATE"] == "false"
    # A real Kafka answers a fetch when a record arrives: its default, not the dev broker's 20.
    assert config["LIANLUO_KAFKA_FETCH_WAIT_MS"] == "500"


def test_every_service_serves_its_figures_where_the_chart_scrapes_them() -> None:
    """A port named metrics (9464) on each pod and Service, the setting that makes the service
    listen there, and the label the chart's ServiceMonitor selects."""
    deployments, services = _by_kind("Deployment"), _by_kind("Service")
    configs = _by_kind("ConfigMap")
    for name in (f"cell-7-{s}" for s in SERVICES):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": 9464} in container["ports"]
        assert configs[name]["data"]["LIANLUO_METRICS_PORT"] == "9464"
        service = services[name]
        metrics = {"name": "metrics", "port": 9464, "targetPort": "metrics"}
        assert metrics in service["spec"]["ports"]
        # gRPC stays the first port: clients and probes that take a Service's first find it.
        assert service["spec"]["ports"][0]["name"] == "grpc"
        assert service["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lianluo"


def test_the_template_is_a_pure_function_of_the_spec() -> None:
    assert cell_children("cell-7", SPEC, INPUTS) == cell_children("cell-7", SPEC, INPUTS)
    changed = {**SPEC, "capacity": {"maxSessions": 6000, "maxTenants": 50}}
    old = _by_kind("Deployment")["cell-7-acd"]["spec"]["template"]["metadata"]["annotations"]
    new = next(
        c
        for c in cell_children("cell-7", changed, INPUTS)
        if c["metadata"]["name"] == "cell-7-acd" and c["kind"] == "Deployment"
    )["spec"]["template"]["metadata"]["annotations"]
    assert old != new  # new settings roll the pods


def test_database_names_are_safe_identifiers() -> None:
    assert database_name("lianluo_", "cell-12") == "lianluo_cell_12"


def _deployment(service: str, available: int, want: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1, "labels": {"app.kubernetes.io/name": service}},
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": 1,
            "updatedReplicas": want,
            "availableReplicas": available,
        },
    }


def test_a_cell_is_ready_only_when_every_service_is_available_and_migrated() -> None:
    done = {"metadata": {"name": "cell-1-migrate"}, "status": {"succeeded": 1}}
    running = {"metadata": {"name": "cell-1-migrate"}, "status": {}}
    every = [_deployment(s, 2) for s in SERVICES]
    assert cell_readiness(every, [done], SERVICES)[0]
    ready, why = cell_readiness([*every[:-1], _deployment("notification", 1)], [done], SERVICES)
    assert not ready
    assert "notification" in why
    assert "cell-1-migrate" in cell_readiness(every, [running], SERVICES)[1]
    assert "no Deployment yet for acd" in cell_readiness(every[:3], [done], SERVICES)[1]


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = set_condition([], "Ready", False, "Waiting", "", at="2026-01-01T00:00:00Z")
    same = set_condition(first, "Ready", False, "Waiting", "still", at="2026-01-02T00:00:00Z")
    flipped = set_condition(same, "Ready", True, "Ready", "", at="2026-01-03T00:00:00Z")
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert flipped[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert len(flipped) == 1


def test_only_media_is_exposed_and_as_the_operator_is_told() -> None:
    exposed = TemplateInputs(
        "registry.local/lianluo:1.2.3", "kafka:9092", "admin-key", media_service_type="LoadBalancer"
    )
    children = cell_children("cell-7", SPEC, exposed)
    types = {c["metadata"]["name"]: c["spec"]["type"] for c in children if c["kind"] == "Service"}
    assert types.pop("cell-7-media") == "LoadBalancer"
    assert set(types.values()) == {"ClusterIP"}
    assert {s["spec"]["type"] for s in _by_kind("Service").values()} == {"ClusterIP"}


def _gateway(inputs: TemplateInputs) -> tuple[dict[str, Any], dict[str, str]]:
    children = cell_children("cell-7", SPEC, inputs)
    deployment = next(
        c
        for c in children
        if c["metadata"]["name"] == "cell-7-gateway" and c["kind"] == "Deployment"
    )
    config = next(
        c
        for c in children
        if c["metadata"]["name"] == "cell-7-gateway" and c["kind"] == "ConfigMap"
    )
    return deployment["spec"]["template"]["spec"], config["data"]


def test_a_gateway_keeps_attachments_in_the_bucket_or_else_in_a_writable_volume() -> None:
    pod, config = _gateway(INPUTS)
    container = pod["containers"][0]
    # The root is read-only: without a bucket, the files go to an emptyDir.
    assert config["LIANLUO_OBJECT_STORE_PATH"] == "/var/lib/lianluo/objects"
    assert {"name": "objects", "emptyDir": {}} in pod["volumes"]
    assert {"name": "objects", "mountPath": "/var/lib/lianluo/objects"} in container["volumeMounts"]
    assert "LIANLUO_OBJECT_STORE_BUCKET" not in config

    bucket = replace(
        INPUTS,
        object_store_bucket="files",
        object_store_endpoint="https://s3.example",
        object_store_secret="lianluo-object-storage",
    )
    pod, config = _gateway(bucket)
    container = pod["containers"][0]
    assert config["LIANLUO_OBJECT_STORE_BUCKET"] == "files"
    assert config["LIANLUO_OBJECT_STORE_ENDPOINT"] == "https://s3.example"
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "LIANLUO_OBJECT_STORE_PATH" not in config
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert secrets["LIANLUO_OBJECT_STORE_ACCESS_KEY_ID"] == {
        "name": "lianluo-object-storage",
        "key": "access-key-id",
    }
    # Only the gateway is given the bucket's keys.
    media = next(
        c
        for c in cell_children("cell-7", SPEC, bucket)
        if c["metadata"]["name"] == "cell-7-media" and c["kind"] == "Deployment"
    )
    names = {e["name"] for e in media["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not any(n.startswith("LIANLUO_OBJECT_STORE") for n in names)


def test_a_cell_answers_calls_with_one_voice_replica_on_its_sip_port() -> None:
    children = cell_children("cell-7", {**SPEC, "replicas": {"voice": 3}}, INPUTS)
    found = {(c["kind"], c["metadata"]["name"]): c for c in children}
    deployment = found[("Deployment", "cell-7-voice")]
    # A phone's registration and its calls live in one process: never more than one replica.
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {(p["name"], p.get("protocol", "TCP")) for p in container["ports"]} == {
        ("grpc", "TCP"),
        ("metrics", "TCP"),
        ("sip-udp", "UDP"),
        ("sip-tcp", "TCP"),
    }
    # SDP and Contact name the pod's own address, which RTP reaches.
    env = {e["name"]: e for e in container["env"]}
    assert env["LIANLUO_VOICE_PUBLIC_HOST"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "status.podIP"}
    }
    config = found[("ConfigMap", "cell-7-voice")]["data"]
    assert config["LIANLUO_VOICE_SIP_HOST"] == "0.0.0.0"  # noqa: S104 - the pod's own address
    assert config["LIANLUO_VOICE_MEDIA_ADDRESS"] == "cell-7-media:50051"
    assert config["LIANLUO_VOICE_ACD_ADDRESS"] == "cell-7-acd:50051"
    # Recordings, without a bucket, go to a writable volume as attachments do.
    assert config["LIANLUO_OBJECT_STORE_PATH"] == "/var/lib/lianluo/objects"
    assert {"name": "objects", "emptyDir": {}} in pod["volumes"]
    service = found[("Service", "cell-7-voice")]["spec"]
    assert {(p["name"], p["port"], p.get("protocol", "TCP")) for p in service["ports"]} == {
        ("grpc", 50051, "TCP"),
        ("metrics", 9464, "TCP"),
        ("sip-udp", 5060, "UDP"),
        ("sip-tcp", 5060, "TCP"),
    }
    # A cell cloned for more room asks for one voice replica too, which the CRD allows.
    clone = cell_manifest("cell-8", 5000, 50, 2, "v1")
    assert clone["spec"]["replicas"]["voice"] == 1
    assert clone["spec"]["replicas"]["media"] == 2


def test_a_cell_with_a_sip_certificate_serves_sip_over_tls_too() -> None:
    secured = dataclasses.replace(INPUTS, voice_tls_secret="sip-example-com")
    found = {(c["kind"], c["metadata"]["name"]): c for c in cell_children("cell-7", SPEC, secured)}
    pod = found[("Deployment", "cell-7-voice")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert ("sip-tls", 5061) in {(p["name"], p["containerPort"]) for p in container["ports"]}
    assert {"name": "sip-tls", "secret": {"secretName": "sip-example-com"}} in pod["volumes"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "sip-tls")
    config = found[("ConfigMap", "cell-7-voice")]["data"]
    # The service reads the mounted Secret's files, and serves TLS on the port the pod opens.
    assert config["LIANLUO_VOICE_TLS_CERT_FILE"] == f"{mount['mountPath']}/tls.crt"
    assert config["LIANLUO_VOICE_TLS_KEY_FILE"] == f"{mount['mountPath']}/tls.key"
    assert config["LIANLUO_VOICE_TLS_PORT"] == "5061"
    service = found[("Service", "cell-7-voice")]["spec"]
    assert {"name": "sip-tls", "port": 5061, "targetPort": "sip-tls"} in service["ports"]
    policy = found[("NetworkPolicy", "cell-7-voice")]["spec"]
    assert any({"protocol": "TCP", "port": 5061} in r["ports"] for r in policy["ingress"])
    # No other service is given the certificate, and without one no cell serves TLS.
    media = found[("Deployment", "cell-7-media")]["spec"]["template"]["spec"]
    assert not any(v["name"] == "sip-tls" for v in media["volumes"])
    plain = {(c["kind"], c["metadata"]["name"]): c for c in cell_children("cell-7", SPEC, INPUTS)}
    assert "LIANLUO_VOICE_TLS_CERT_FILE" not in plain[("ConfigMap", "cell-7-voice")]["data"]


def test_export_links_open_where_people_reach_the_cells_gateway() -> None:
    def link_base(inputs: TemplateInputs) -> str:
        found = {
            (c["kind"], c["metadata"]["name"]): c for c in cell_children("cell-7", SPEC, inputs)
        }
        return str(
            found[("ConfigMap", "cell-7-recording")]["data"]["LIANLUO_RECORDING_LINK_BASE_URL"]
        )

    # Without a public address, the gateway's Service: links open inside the cluster only.
    assert link_base(INPUTS) == "http://cell-7-gateway:8088"
    public = dataclasses.replace(INPUTS, gateway_public_url="https://{cell}.cc.example.com/")
    assert link_base(public) == "https://cell-7.cc.example.com"


def test_a_cells_database_url_keeps_the_admin_urls_options() -> None:
    managed = "postgresql://admin:s3cret@db.example:5432/postgres?sslmode=require"
    assert database_url(managed, "lianluo_cell_2") == (
        "postgresql://admin:s3cret@db.example:5432/lianluo_cell_2?sslmode=require"
    )
    assert database_url("postgresql://admin@db:5432", "lianluo_cell_1") == (
        "postgresql://admin@db:5432/lianluo_cell_1"
    )


def test_a_services_database_url_has_its_own_role_and_the_admin_urls_host_and_options() -> None:
    managed = "postgresql://admin:s3cret@db.example:5432/postgres?sslmode=require"
    url = service_database_url(managed, "lianluo_cell_2", "media")
    assert url.startswith("postgresql://lianluo_cell_2_media:")
    assert url.endswith("@db.example:5432/lianluo_cell_2?sslmode=require")
    assert "s3cret" not in url
    # The same inputs give the same password; another role, or another admin credential,
    # another one.
    assert url == service_database_url(managed, "lianluo_cell_2", "media")
    other = service_database_url(managed, "lianluo_cell_2", "acd").split("@")[0]
    rotated = service_database_url(managed.replace("s3cret", "n3w"), "lianluo_cell_2", "media")
    assert len({url.split("@")[0].split(":")[2], other.split(":")[2]}) == 2
    assert rotated != url
    with pytest.raises(ValueError, match="longer than Postgres allows"):
        role_name("lianluo_" + "c" * 60, "notification")


def test_an_upgrade_makes_a_new_migrate_job_and_nothing_else_does() -> None:
    def job(inputs: TemplateInputs, spec: dict[str, Any]) -> str:
        (found,) = (c for c in cell_children("cell-7", spec, inputs) if c["kind"] == "Job")
        return str(found["metadata"]["name"])

    first = job(INPUTS, SPEC)
    assert job(INPUTS, SPEC) == first
    # Replicas are no setting of the Job's pod: the same Job.
    assert job(INPUTS, {**SPEC, "replicas": {"media": 9}}) == first
    # A new image, or new settings of the cell, migrate it again.
    assert job(replace(INPUTS, image="registry.local/lianluo:1.2.4"), SPEC) != first
    assert job(INPUTS, {**SPEC, "capacity": {"maxSessions": 6000, "maxTenants": 50}}) != first


def test_every_pod_of_a_cell_passes_pod_security_restricted() -> None:
    pods = [
        c["spec"]["template"]["spec"]
        for c in cell_children("cell-7", SPEC, INPUTS)
        if c["kind"] in ("Deployment", "Job")
    ]
    assert len(pods) == len(SERVICES) + 1
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        guard = container["securityContext"]
        assert guard["allowPrivilegeEscalation"] is False
        assert guard["capabilities"] == {"drop": ["ALL"]}
        assert guard["readOnlyRootFilesystem"] is True
        # A read-only root, and yet a writable /tmp of the pod's own.
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    deployment = next(c for c in cell_children("cell-7", SPEC, INPUTS) if c["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # Slow to start is not dead: liveness waits until the service first listens.
    assert (
        container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"]
        >= 120
    )


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.utils.latest_version()])
def test_every_child_of_a_cell_validates_strictly(version: str) -> None:
    """What the operator sends the API server is valid Kubernetes, every option on: no field
    misspelt or misplaced (strict), at 1.30 and at the newest version known."""
    everything = replace(
        INPUTS,
        image_pull_secrets=("registry-credentials",),
        node_selector={"lianluo.io/pool": "cells"},
        tolerations=(
            {"key": "dedicated", "operator": "Equal", "value": "cells", "effect": "NoSchedule"},
        ),
        service_annotations={"media": {"example.com/scheme": "internet-facing"}},
        resources={"media": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}},
        object_store_bucket="recordings",
        object_store_secret="lianluo-object-storage",
        served=frozenset({PDB_API, HPA_API}),
        autoscaling=True,
        autoscaling_on_load=True,
    )
    children = cell_children("cell-7", {**SPEC, "seats": 2000}, everything)
    admin = "postgresql://admin:pw@db:5432/postgres"
    children += database_secrets("cell-7", admin, "lianluo_cell_7")
    assert {c["kind"] for c in children} == {
        "ConfigMap", "Deployment", "Service", "NetworkPolicy", "Job", "Secret",
        "PodDisruptionBudget", "HorizontalPodAutoscaler",
    }  # fmt: skip
    for child in children:
        kubernetes_validate.validate(child, version, strict=True)


def test_pdbs_and_hpas_only_where_the_cluster_serves_them_and_hpas_own_the_replicas() -> None:
    def kinds(inputs: TemplateInputs, spec: dict[str, Any]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for child in cell_children("cell-7", spec, inputs):
            found.setdefault(child["kind"], []).append(child)
        return found

    # An API server without policy/v1 or autoscaling/v2 (1.20) gets neither.
    old = kinds(replace(INPUTS, autoscaling=True), SPEC)
    assert "PodDisruptionBudget" not in old and "HorizontalPodAutoscaler" not in old
    assert all("replicas" in d["spec"] for d in old["Deployment"])

    served = replace(INPUTS, served=frozenset({PDB_API, HPA_API}))
    # Without autoscaling: a PDB for each service of more than one replica (not voice).
    plain = kinds(served, SPEC)
    budgets = {b["metadata"]["name"] for b in plain["PodDisruptionBudget"]}
    assert budgets == {f"cell-7-{s}" for s in SERVICES if s != "voice"}
    assert all(b["spec"]["maxUnavailable"] == 1 for b in plain["PodDisruptionBudget"])
    # With it: an HPA owns each service's replicas but voice's, its floor what the seats need.
    scaled = kinds(replace(served, autoscaling=True), {**SPEC, "seats": 1000})
    hpas = {h["metadata"]["name"]: h["spec"] for h in scaled["HorizontalPodAutoscaler"]}
    assert set(hpas) == {f"cell-7-{s}" for s in SERVICES if s != "voice"}
    assert (hpas["cell-7-media"]["minReplicas"], hpas["cell-7-media"]["maxReplicas"]) == (4, 12)
    for deployment in scaled["Deployment"]:
        voice = deployment["metadata"]["name"] == "cell-7-voice"
        assert ("replicas" in deployment["spec"]) is voice
    assert all([m["type"] for m in h["metrics"]] == ["Resource"] for h in hpas.values()), (
        "CPU only unless asked"
    )

    # On load as well: media on the streams of a replica's seats, consumers on their lag.
    loaded = kinds(replace(served, autoscaling=True, autoscaling_on_load=True), SPEC)
    on = {
        h["metadata"]["name"].removeprefix("cell-7-"): {
            m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"]
            for m in h["spec"]["metrics"]
            if m["type"] == "Pods"
        }
        for h in loaded["HorizontalPodAutoscaler"]
    }
    assert on["media"] == {"lianluo_media_streams_open": str(INPUTS.seats_per_replica)}
    for consumer in ("ivr", "acd", "recording", "notification"):
        assert on[consumer] == {"lianluo_kafka_consumer_lag": "1000"}
    assert on["tenants"] == on["gateway"] == on["console"] == {}
