"""What an SRE relies on in every rendered workload: hardening, probes, limits, one name per
component, a single Recreate operator whose RBAC covers its CRDs, and secrets only by reference."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chart_render import CASES, CHART, Case, documents, operator_settings, render

from lianluo.operator.runtime import Runtime
from lianluo.operator.template import RESOURCES, cell_children
from lianluo.runtime.settings import GrpcTlsSettings

IDS = [c.name for c in CASES]


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    case: Case = request.param
    return documents(render(case))


def test_every_container_is_hardened_and_bounded(docs: list[dict[str, Any]]) -> None:
    for deployment in _of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            name = f"{deployment['metadata']['name']}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            assert "livenessProbe" in container, name


def test_one_name_per_component(docs: list[dict[str, Any]]) -> None:
    for deployment in _of_kind(docs, "Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert container["name"] == component
        assert env["OTEL_SERVICE_NAME"]["value"] == component
        if component != "operator":
            assert container["args"] == ["serve", component]
            assert container["readinessProbe"]["grpc"]["port"] == 50051


def test_the_first_cell_is_a_cell_the_operator_builds(docs: list[dict[str, Any]]) -> None:
    """No cell workload comes from the chart: the operator builds every cell, the first too."""
    (cell,) = _of_kind(docs, "Cell")
    assert cell["metadata"]["name"] == "cell-1"
    assert cell["spec"]["capacity"] == {"maxSessions": 5000, "maxTenants": 50}
    assert set(cell["spec"]["replicas"]) == {
        "tenants", "media", "ivr", "acd", "recording", "notification", "gateway", "console",
        "voice",
    }  # fmt: skip
    assert cell["spec"]["replicas"]["voice"] == 1
    planes = {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in _of_kind(docs, "Deployment")
    }
    assert planes == {"operator", "tenants", "edge"}


def test_secrets_are_referenced_never_inlined(docs: list[dict[str, Any]]) -> None:
    assert not _of_kind(docs, "Secret")
    for deployment in _of_kind(docs, "Deployment"):
        for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            if env["name"].endswith(("ADMIN_KEY", "DATABASE_URL", "PASSWORD", "ADMIN_URL")):
                assert "secretKeyRef" in env.get("valueFrom", {}), env


def test_operator_is_single_recreate_with_kopf_liveness(docs: list[dict[str, Any]]) -> None:
    (operator,) = [
        d
        for d in _of_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert any(a.startswith("--liveness=http://0.0.0.0:8080/healthz") for a in container["args"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert not [
        d
        for d in docs
        if d["kind"] in {"PodDisruptionBudget", "HorizontalPodAutoscaler"}
        and d["metadata"]["name"] == operator["metadata"]["name"]
    ]


def test_operator_rbac_covers_its_crds_in_its_namespace_only(docs: list[dict[str, Any]]) -> None:
    crds = [d for p in sorted((CHART / "crds").glob("*.yaml")) for d in documents(p.read_text())]
    if not crds:
        pytest.skip("the chart has no CRDs yet")
    # Nothing cluster-wide: the operator watches the release's namespace, where all it
    # builds lives.
    assert not _of_kind(docs, "ClusterRole") and not _of_kind(docs, "ClusterRoleBinding")
    (role,) = [r for r in _of_kind(docs, "Role") if r["metadata"]["name"].endswith("-operator")]
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    for crd in crds:
        plural, group = crd["spec"]["names"]["plural"], crd["spec"]["group"]
        assert {"get", "list", "watch", "patch"} <= granted[(group, plural)]
        assert "patch" in granted[(group, f"{plural}/status")]
    # It deletes no Cell, reads no Secret, and may update its migrate Jobs.
    assert "delete" not in granted[("lianluo.io", "cells")]
    assert not {"get", "list", "watch"} & granted[("", "secrets")]
    assert {"patch", "delete", "create"} <= granted[("batch", "jobs")]


def test_pdb_and_hpa_match_their_deployments(docs: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in _of_kind(docs, "Deployment")}
    for hpa in _of_kind(docs, "HorizontalPodAutoscaler"):
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        # The autoscaler owns the replica count; a fixed one would fight it on every upgrade.
        assert "replicas" not in target["spec"]
    for pdb in _of_kind(docs, "PodDisruptionBudget"):
        target = deployments[pdb["metadata"]["name"]]
        assert pdb["spec"]["selector"] == target["spec"]["selector"]


def test_the_uninstall_teardown_is_a_pre_delete_hook_only_when_asked(
    docs: list[dict[str, Any]],
) -> None:
    hooks = [d for d in docs if d["metadata"].get("labels", {}).get(
        "app.kubernetes.io/component") == "teardown"]  # fmt: skip
    if not hooks:
        return  # off unless uninstall.teardown (values-everything.yaml turns it on)
    assert sorted(d["kind"] for d in hooks) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    for d in hooks:
        assert d["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    (role,) = _of_kind(hooks, "Role")
    assert role["rules"] == [
        {"apiGroups": ["lianluo.io"], "resources": ["tenants", "cells"],
         "verbs": ["get", "list", "delete"]},
    ]  # fmt: skip
    (job,) = _of_kind(hooks, "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:1] == ["teardown"] and "--drop-databases" in container["args"]
    assert "--timeout=900" in container["args"]
    assert job["spec"]["activeDeadlineSeconds"] == 960
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Only the database admin URL, to drop the cells' databases: no admin key, nothing else.
    assert [e["name"] for e in container["env"]] == [
        "LIANLUO_OPERATOR_DATABASE_ADMIN_URL",
        "LIANLUO_OPERATOR_DATABASE_PREFIX",
    ]


def test_a_digest_pins_every_image_the_release_runs(docs: list[dict[str, Any]]) -> None:
    """With image.digest, the chart's pods and the cells the operator builds run that digest."""
    containers = [
        c
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    images = {c["image"] for c in containers}
    operator_image = {
        e["value"]
        for c in containers
        for e in c.get("env", [])
        if e["name"] == "LIANLUO_OPERATOR_IMAGE"
    }
    pinned = {i for i in images | operator_image if "@sha256:" in i}
    assert pinned in (set(), images | operator_image), "all pinned, or none"
    assert len(images | operator_image) == 1, "one image runs everything"


def test_the_cells_get_the_charts_pull_secrets_placement_resources_and_annotations(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the chart says of the cells reaches every cell the operator builds, through the
    operator's settings as its pod reads them."""
    component = "app.kubernetes.io/component"
    (operator,) = [
        d for d in _of_kind(docs, "Deployment") if d["metadata"]["labels"][component] == "operator"
    ]
    chart_pod = operator["spec"]["template"]["spec"]
    runtime = Runtime(operator_settings(chart_pod, monkeypatch), kube=None, tenants=None)  # type: ignore[arg-type]
    children = cell_children("cell-2", {}, runtime.template)
    pods = {c["metadata"]["name"]: c["spec"]["template"]["spec"] for c in children
            if c["kind"] == "Deployment"}  # fmt: skip
    values = yaml.safe_load((CHART / "values.yaml").read_text())["cells"]
    for name, pod in pods.items():
        assert pod.get("imagePullSecrets", []) == chart_pod.get("imagePullSecrets", []), name
    media = pods["cell-2-media"]
    if not runtime.settings.cell_node_selector:
        assert values["nodeSelector"] == {} and "nodeSelector" not in media
        return
    assert media["nodeSelector"] == {"lianluo.io/pool": "cells"}
    assert media["tolerations"][0]["key"] == "dedicated"
    assert media["containers"][0]["resources"]["limits"] == {"memory": "2Gi"}
    # The others keep the template's own, sized per service.
    assert pods["cell-2-acd"]["containers"][0]["resources"] == RESOURCES["acd"]
    (service,) = [
        c for c in children if c["kind"] == "Service" and c["metadata"]["name"] == "cell-2-media"
    ]
    assert service["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"
    }


def test_grpc_tls_reaches_every_component_and_every_cell_the_operator_builds(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployments = _of_kind(docs, "Deployment")
    pods = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["spec"]
            for d in deployments}  # fmt: skip
    tls = {
        name: {e["name"]: e.get("value") for e in pod["containers"][0]["env"]
               if e["name"].startswith("LIANLUO_GRPC_TLS_")}
        for name, pod in pods.items()
    }  # fmt: skip
    if not tls["tenants"]:
        assert not any(tls.values()), "all or none"
        return
    # One certificate, checked by the one name it is issued to, everywhere: the operator too
    # (it dials the cells' tenants services).
    assert all(t == tls["tenants"] for t in tls.values())
    assert tls["tenants"]["LIANLUO_GRPC_TLS_SERVER_NAME"] == "lianluo.internal"
    (certificate,) = [d for d in docs if d["kind"] == "Certificate" and not d["spec"].get("isCA")]
    assert certificate["spec"]["dnsNames"] == ["lianluo.internal"]
    assert {"server auth", "client auth"} <= set(certificate["spec"]["usages"])
    for pod in pods.values():
        (volume,) = [v for v in pod["volumes"] if v["name"] == "grpc-tls"]
        assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    # The cells: the same files, mounted from the same Secret.
    runtime = Runtime(
        operator_settings(pods["operator"], monkeypatch),
        kube=None,  # type: ignore[arg-type]
        tenants=None,  # type: ignore[arg-type]
        grpc_tls=GrpcTlsSettings.model_construct(
            grpc_tls_server_name="lianluo.internal", grpc_tls_client_auth=True
        ),
    )
    children = cell_children("cell-2", {}, runtime.template)
    config = next(
        c for c in children if c["metadata"]["name"] == "cell-2-media" and c["kind"] == "ConfigMap"
    )
    cell_tls = {k: v for k, v in config["data"].items() if k.startswith("LIANLUO_GRPC_TLS_")}
    assert cell_tls == tls["tenants"]


def test_every_pod_has_a_network_policy_that_opens_only_what_its_clients_use(
    docs: list[dict[str, Any]],
) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _of_kind(docs, "NetworkPolicy")}
    services = {s["metadata"]["name"]: s["spec"] for s in _of_kind(docs, "Service")}
    own = [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "lianluo"}}}]
    for deployment in _of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = policies[name]
        assert spec["podSelector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        grpc = [r for r in spec["ingress"] if {"port": 50051, "protocol": "TCP"} in r["ports"]]
        if component == "operator":
            assert spec["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
            continue
        (rule,) = grpc
        exposed = services.get(name, {}).get("type", "ClusterIP") != "ClusterIP"
        if component == "edge" or exposed:
            assert "from" not in rule, name  # clients come from outside
        else:
            assert rule["from"] == own, name
