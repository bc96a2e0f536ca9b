"""The Helm chart: it lints, every profile renders to objects a 1.30 API server accepts in strict
mode, renders match the committed golden files, and a misspelt value is refused by name.

Regenerate the golden files after an intended change:
    LIANLUO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/chart -k golden
"""

from __future__ import annotations

import os
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_render import CASES, CHART, GOLDEN, KUBE_VERSION, Case, documents, render, run_helm

from lianluo.devstack import helm

# Custom resources of other projects' operators: kubernetes-validate has no schema for them.
FOREIGN_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
}
IDS = [c.name for c in CASES]


def _own_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """This project's custom resources are checked against their own CRDs' schemas."""
    found = {}
    for path in (CHART / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            found[key] = version["schema"]["openAPIV3Schema"]
    return found


OWN_KINDS = _own_schemas()


def _validate(doc: dict[str, Any]) -> None:
    own = OWN_KINDS.get((doc["apiVersion"], doc["kind"]))
    if own is not None:
        jsonschema.validate(doc, own)
        return
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lint_strict_passes(case: Case) -> None:
    args = ["lint", "--strict", str(CHART), *[f"--values={v}" for v in case.values]]
    done = run_helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_rendered_object_validates_strictly(case: Case) -> None:
    failures = []
    for doc in documents(render(case)):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            _validate(doc)
        except kubernetes_validate.utils.SchemaNotFoundError:
            if (doc["apiVersion"], doc["kind"]) not in FOREIGN_KINDS:
                failures.append(f"{where}: no schema for {doc['apiVersion']}")
        except (kubernetes_validate.utils.ValidationError, jsonschema.ValidationError) as error:
            path = ".".join(str(p) for p in error.path)
            failures.append(f"{where}: {path}: {error.message}")
    assert not failures, "\n".join(failures)


def test_strict_validation_catches_an_unknown_field() -> None:
    """Guards the test above: a typo inside a rendered object is not let through."""
    deployment = next(d for d in documents(render(CASES[0])) if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbez"] = {}
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        _validate(deployment)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_render_matches_golden(case: Case) -> None:
    rendered = render(case)
    golden = GOLDEN / f"{case.name}.yaml"
    if os.environ.get("LIANLUO_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert golden.is_file(), f"{golden} is missing; see this module's docstring to create it"
    assert rendered == golden.read_text(), (
        f"the {case.name} render differs from {golden.name}; if the change is intended, "
        "regenerate with LIANLUO_UPDATE_GOLDEN=1 (see this module's docstring)"
    )


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        ("components.tenants.replicaz=3", "replicaz"),
        ("components.tenant.enabled=true", "tenant"),
        ("firstcell.enabled=false", "firstcell"),
        ("components.media.service.tpye=NodePort", "tpye"),
        ("components.acd.plane=edge", "plane"),
    ],
)
def test_a_misspelt_value_is_rejected_by_name(flag: str, named: str) -> None:
    done = run_helm("template", "lianluo", str(CHART), "--set", flag)
    assert done.returncode != 0, f"--set {flag} was accepted"
    assert named in done.stderr, done.stderr


def test_a_gateway_public_url_that_is_no_http_url_is_refused_by_name() -> None:
    done = run_helm(
        "template", "lianluo", str(CHART), "--set", "cells.gatewayPublicUrl=cc.example.com"
    )
    assert done.returncode != 0
    assert "gatewayPublicUrl" in done.stderr, done.stderr


def test_kafka_must_have_an_address() -> None:
    done = run_helm("template", "lianluo", str(CHART), "--set", "kafka.bootstrapServers=")
    assert done.returncode != 0
    assert "kafka.bootstrapServers" in done.stderr


def test_chart_crds_match_the_operator_source() -> None:
    if not helm.CRD_SOURCE.is_dir():
        pytest.skip(f"{helm.CRD_SOURCE} does not exist yet")
    drift = helm.crd_drift()
    assert not drift, (
        f"the chart's crds/ differs from operators/crds/ in {drift}; "
        "run `.venv/bin/python -m lianluo.devstack.helm sync-crds`"
    )


def test_chart_crds_validate_strictly() -> None:
    files = sorted((CHART / "crds").glob("*.yaml"))
    if not files:
        pytest.skip("the chart has no CRDs yet")
    for path in files:
        for doc in documents(path.read_text()):
            _validate(doc)


def test_the_charts_readme_names_every_top_level_value() -> None:
    """`helm show readme` is what an SRE reads first: no value of the chart goes unmentioned."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    assert [key for key in values if f"`{key}`" not in readme] == []
