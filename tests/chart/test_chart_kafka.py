"""The chart's Kafka security reaches every client: the components get the LIANLUO_KAFKA_*
settings the services read, the TLS files from Secrets at the paths those settings name, and the
operator gets what it needs to give every cell it clones the same (and no credentials itself)."""

from __future__ import annotations

from typing import Any

import pytest
from chart_render import CASES, CHART, Case, documents, operator_settings, render, run_helm

from lianluo.operator.runtime import Runtime
from lianluo.operator.template import cell_children
from lianluo.runtime.settings import KafkaSecuritySettings

IDS = [c.name for c in CASES]
# The settings of the security, apart from the address and the fetch wait.
SECURITY = {f"LIANLUO_{name.upper()}" for name in KafkaSecuritySettings.model_fields}


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def pods(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """Each Deployment's pod spec, by component."""
    case: Case = request.param
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["spec"]
        for d in documents(render(case))
        if d["kind"] == "Deployment"
    }


def _env(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod["containers"][0]["env"]}


def _kafka_security(pod: dict[str, Any]) -> dict[str, Any]:
    """The component's Kafka security settings, plain values and Secret references alike."""
    return {
        name: entry.get("value", entry.get("valueFrom"))
        for name, entry in _env(pod).items()
        if name in SECURITY
    }


def _kafka_mounts(pod: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    volumes = [v for v in pod.get("volumes", []) if v["name"].startswith("kafka-")]
    container = pod["containers"][0]
    mounts = [m for m in container.get("volumeMounts", []) if m["name"].startswith("kafka-")]
    return volumes, mounts


def test_every_component_reads_the_same_kafka_security(pods: dict[str, dict[str, Any]]) -> None:
    services = {name: pod for name, pod in pods.items() if name != "operator"}
    seen = [_kafka_security(pod) for pod in services.values()]
    assert all(settings == seen[0] for settings in seen)
    for pod in services.values():
        volumes, mounts = _kafka_mounts(pod)
        for name, value in _kafka_security(pod).items():
            if name.endswith("_FILE"):
                # The file is on a read-only mount of a Secret's volume.
                (mount,) = [m for m in mounts if value.startswith(m["mountPath"] + "/")]
                assert mount["readOnly"] is True
                (volume,) = [v for v in volumes if v["name"] == mount["name"]]
                paths = [item["path"] for item in volume["secret"]["items"]]
                assert value.rpartition("/")[2] in paths


def test_the_operator_reaches_kafka_as_the_components_do_and_clones_cells_like_the_chart(
    pods: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator reads the cells' consumer offsets when it moves a tenant, with the settings
    every component has; and gives each cell it clones the same."""
    operator, tenants = pods["operator"], pods["tenants"]
    assert _kafka_security(operator) == _kafka_security(tenants)
    assert _kafka_mounts(operator) == _kafka_mounts(tenants)
    runtime = Runtime(operator_settings(operator, monkeypatch), kube=None, tenants=None)  # type: ignore[arg-type]
    children = cell_children("cell-2", {}, runtime.template)
    tenants_of_cell = {c["kind"]: c for c in children if c["metadata"]["name"] == "cell-2-tenants"}
    config = tenants_of_cell["ConfigMap"]["data"]
    cell = tenants_of_cell["Deployment"]["spec"]["template"]["spec"]
    cloned = {k: v for k, v in config.items() if k in SECURITY}
    cloned |= {
        e["name"]: e["valueFrom"] for e in cell["containers"][0]["env"] if e["name"] in SECURITY
    }
    assert cloned == _kafka_security(tenants)
    assert _kafka_mounts(cell) == _kafka_mounts(tenants)


def test_a_managed_kafka_gets_sasl_ssl_with_the_system_trust_store() -> None:
    (public,) = [c for c in CASES if c.name == "public-cloud"]
    pod = next(
        d["spec"]["template"]["spec"]
        for d in documents(render(public))
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-tenants")
    )
    secret = {"name": "lianluo-kafka"}
    assert _kafka_security(pod) == {
        "LIANLUO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LIANLUO_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "LIANLUO_KAFKA_SASL_USERNAME": {"secretKeyRef": {**secret, "key": "username"}},
        "LIANLUO_KAFKA_SASL_PASSWORD": {"secretKeyRef": {**secret, "key": "password"}},
    }


@pytest.mark.parametrize("protocol", ["", "SASL_PLAINTEXT"])
def test_kafka_tls_files_without_tls_are_refused_by_name(protocol: str) -> None:
    args = ["--set", "kafka.tls.caSecretName=kafka-cluster-ca-cert"]
    if protocol:
        args += [
            "--set",
            "kafka.auth.enabled=true",
            "--set",
            f"kafka.auth.securityProtocol={protocol}",
        ]
    done = run_helm("template", "lianluo", str(CHART), *args)
    assert done.returncode != 0
    assert "kafka.tls needs kafka.auth.enabled with securityProtocol SSL or SASL_SSL" in done.stderr
