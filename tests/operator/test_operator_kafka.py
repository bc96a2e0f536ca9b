"""A cloned cell reaches a secured Kafka as the chart's first components do: the operator gives
every service and the migrate Job the LIANLUO_KAFKA_* settings, the credentials only as Secret
references, and the TLS files as read-only Secret volumes at the paths the settings name."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from lianluo.operator.runtime import Runtime
from lianluo.operator.settings import OperatorSettings
from lianluo.operator.template import SERVICES, KafkaSecurity, TemplateInputs, cell_children
from lianluo.runtime.settings import KafkaSecuritySettings

INPUTS = TemplateInputs("registry.local/lianluo:1.2.3", "kafka:9092", "admin-key", 50051, 2)
SPEC: dict[str, Any] = {"capacity": {"maxSessions": 5000, "maxTenants": 50}}
MANAGED = KafkaSecurity(
    protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_secret="lianluo-kafka",
    ca_secret="kafka-cluster-ca",
)
MUTUAL = KafkaSecurity(
    protocol="SSL",
    ca_secret="kafka-cluster-ca",
    client_secret="lianluo-kafka-user",
    cert_key="user.crt",
    key_key="user.key",
)


def _children(security: KafkaSecurity) -> list[dict[str, Any]]:
    return cell_children("cell-7", SPEC, replace(INPUTS, kafka_security=security))


def _pods(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod templates of every Deployment and the migrate Job."""
    return [c["spec"]["template"]["spec"] for c in children if c["kind"] in ("Deployment", "Job")]


def _config(children: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {c["metadata"]["name"]: c["data"] for c in children if c["kind"] == "ConfigMap"}


def test_a_cell_without_kafka_security_keeps_its_settings_and_pods() -> None:
    children = _children(KafkaSecurity())

    assert children == cell_children("cell-7", SPEC, INPUTS)
    for data in _config(children).values():
        # No LIANLUO_KAFKA_SECURITY_PROTOCOL, _SASL_* or _SSL_*.
        assert not [k for k in data if k.startswith("LIANLUO_KAFKA_S")]


def test_a_managed_kafka_gets_sasl_ssl_with_credentials_only_by_secret_reference() -> None:
    children = _children(MANAGED)

    configs = _config(children)
    assert len(configs) == len(SERVICES)
    for data in configs.values():
        assert data["LIANLUO_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert data["LIANLUO_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert data["LIANLUO_KAFKA_SSL_CA_FILE"] == "/etc/lianluo/kafka/ca/ca.crt"
        # A ConfigMap is readable by anyone who may read the namespace's configuration.
        assert "LIANLUO_KAFKA_SASL_USERNAME" not in data
        assert "LIANLUO_KAFKA_SASL_PASSWORD" not in data
    pods = _pods(children)
    assert len(pods) == len(SERVICES) + 1  # the migrate Job creates topics too
    for pod in pods:
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        for name, key in (("USERNAME", "username"), ("PASSWORD", "password")):
            assert env[f"LIANLUO_KAFKA_SASL_{name}"] == {
                "name": f"LIANLUO_KAFKA_SASL_{name}",
                "valueFrom": {"secretKeyRef": {"name": "lianluo-kafka", "key": key}},
            }
        assert {
            "name": "kafka-ca",
            "secret": {
                "secretName": "kafka-cluster-ca",
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            },
        } in pod["volumes"]
        assert {
            "name": "kafka-ca",
            "mountPath": "/etc/lianluo/kafka/ca",
            "readOnly": True,
        } in container["volumeMounts"]


def test_mutual_tls_mounts_the_client_certificate_and_sends_no_sasl() -> None:
    children = _children(MUTUAL)

    for data in _config(children).values():
        assert data["LIANLUO_KAFKA_SECURITY_PROTOCOL"] == "SSL"
        assert data["LIANLUO_KAFKA_SSL_CERT_FILE"] == "/etc/lianluo/kafka/client/tls.crt"
        assert data["LIANLUO_KAFKA_SSL_KEY_FILE"] == "/etc/lianluo/kafka/client/tls.key"
        assert "LIANLUO_KAFKA_SASL_MECHANISM" not in data
    for pod in _pods(children):
        (container,) = pod["containers"]
        assert not [e for e in container["env"] if e["name"].startswith("LIANLUO_KAFKA_SASL")]
        client = next(v for v in pod["volumes"] if v["name"] == "kafka-client")
        assert client["secret"] == {
            "secretName": "lianluo-kafka-user",
            "items": [
                {"key": "user.crt", "path": "tls.crt"},
                {"key": "user.key", "path": "tls.key"},
            ],
        }


@pytest.mark.parametrize("security", [MANAGED, MUTUAL], ids=["sasl-ssl", "mutual-tls"])
def test_every_kafka_setting_the_template_writes_is_one_the_services_read(
    security: KafkaSecurity,
) -> None:
    (pod, *_) = _pods(_children(security))
    (container,) = pod["containers"]
    names = {e["name"] for e in container["env"]}
    names |= set(_config(_children(security))["cell-7-tenants"])
    read = {f"LIANLUO_{field.upper()}" for field in KafkaSecuritySettings.model_fields}
    written = {n for n in names if n.startswith("LIANLUO_KAFKA_") and "FETCH_WAIT" not in n}
    written -= {"LIANLUO_KAFKA_BOOTSTRAP_SERVERS"}
    assert written and written <= read


def test_new_kafka_secrets_make_a_new_migrate_job() -> None:
    def job(security: KafkaSecurity) -> str:
        (found,) = [c for c in _children(security) if c["kind"] == "Job"]
        name: str = found["metadata"]["name"]
        return name

    assert job(MANAGED) != job(replace(MANAGED, sasl_secret="lianluo-kafka-rotated"))
    assert job(KafkaSecurity()) == job(KafkaSecurity())


# ---------------------------------------------------------------- the operator's settings


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LIANLUO_OPERATOR_TENANTS_ADDRESS": "lianluo-tenants:50051",
        "LIANLUO_OPERATOR_ADMIN_KEY": "k3y-for-unit-tests-0123456789",
        "LIANLUO_OPERATOR_KAFKA_BOOTSTRAP_SERVERS": "b-1.kafka:9096",
        "LIANLUO_OPERATOR_DATABASE_ADMIN_URL": "postgresql://admin@db/postgres",
    }.items():
        monkeypatch.setenv(name, value)


def _refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, str]:
    for name, value in env.items():
        monkeypatch.setenv(f"LIANLUO_OPERATOR_{name}", value)
    with pytest.raises(ValidationError) as raised:
        OperatorSettings()  # type: ignore[call-arg]
    return {str(e["loc"][0]): e["msg"] for e in raised.value.errors()}


@pytest.mark.usefixtures("operator_env")
def test_the_operator_refuses_sasl_without_the_credentials_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = _refused(monkeypatch, KAFKA_SECURITY_PROTOCOL="SASL_SSL")

    assert list(refused) == ["kafka_sasl_secret"]
    assert (
        "required when LIANLUO_OPERATOR_KAFKA_SECURITY_PROTOCOL is SASL_SSL"
        in refused["kafka_sasl_secret"]
    )


@pytest.mark.usefixtures("operator_env")
def test_the_operator_refuses_tls_files_without_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = _refused(monkeypatch, KAFKA_SSL_CA_SECRET="kafka-cluster-ca")

    assert list(refused) == ["kafka_ssl_ca_secret"]
    assert "PLAINTEXT does not use TLS" in refused["kafka_ssl_ca_secret"]


@pytest.mark.usefixtures("operator_env")
def test_the_operator_reads_its_kafka_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_SECRET": "lianluo-kafka",
        "KAFKA_SSL_CA_SECRET": "kafka-cluster-ca",
    }.items():
        monkeypatch.setenv(f"LIANLUO_OPERATOR_{name}", value)

    s = OperatorSettings()  # type: ignore[call-arg]

    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    # What every cell it clones is given.
    template = Runtime(s, kube=None, tenants=None).template  # type: ignore[arg-type]
    assert template.kafka_security == replace(MANAGED, sasl_mechanism="SCRAM-SHA-512")


@pytest.mark.usefixtures("operator_env")
def test_the_cells_placement_and_resources_are_refused_at_the_start_not_by_the_api_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the API server would refuse when a cell's pods are made is refused when the
    operator starts, by setting."""
    assert set(
        _refused(
            monkeypatch,
            CELL_RESOURCES='{"media": {"limits": {"memory": "2 gigs"}}}',
            CELL_TOLERATIONS='[{"key": "dedicated", "effect": "Sometimes"}]',
            CELL_SERVICE_ANNOTATIONS='{"medai": {"a": "b"}}',
            IMAGE_PULL_SECRETS='["Not A Name"]',
        )
    ) == {"cell_resources", "cell_tolerations", "cell_service_annotations", "image_pull_secrets"}
