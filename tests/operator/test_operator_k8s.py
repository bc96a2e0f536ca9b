"""The operator against a real kube-apiserver and the real tenants service.

No kubelet runs here, so each test marks a cell's Deployments and Job ready by writing their
status, as a kubelet and the workload controllers would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import kopf
import pytest
from cell_support import AgentAtWork, retrying
from conftest import ADMIN, ADMIN_KEY, Served, Stack, running_cell
from factories import Client, agent, onboard, queue, user
from k8s_support import Api, chart_account, eventually
from kopf.testing import KopfRunner

from lianluo.common.v1 import common_pb2 as common
from lianluo.devstack import helm, infra, k8s
from lianluo.devstack.cell import Cell
from lianluo.devstack.clients import Session, StreamClient
from lianluo.edge.v1 import edge_pb2 as edge_pb
from lianluo.edge.v1 import edge_pb2_grpc as edge_rpc
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.operator.kube import ApiError
from lianluo.operator.move import CellEnds, Mover, quiet
from lianluo.operator.template import SERVICES, cell_manifest
from lianluo.operator.tenants_api import TenantsApi, tenant_message
from lianluo.recording.v1 import recording_pb2 as rpb
from lianluo.recording.v1 import recording_pb2_grpc as recording_rpc
from lianluo.runtime.service import Service
from lianluo.runtime.settings import KafkaSecuritySettings
from lianluo.runtime.tenant_copy import CopyRefused, copy_tenant, has_rows, tenant_tables
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

# kube-apiserver is built by `make install`; the tests only start it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[k8s.Cluster]:
    state = tmp_path_factory.mktemp("k8s")
    try:
        yield k8s.up(state)
    finally:
        k8s.down(state)


@pytest.fixture(scope="module")
async def api(cluster: k8s.Cluster) -> AsyncIterator[Api]:
    info = kopf.ConnectionInfo(
        server=cluster.server, ca_path=str(cluster.ca_file), scheme="Bearer", token=cluster.token
    )
    client = Api.from_connection(info)
    try:
        await client.apply_crds()
        yield client
    finally:
        await client.close()


# Each test namespace's kubeconfig for the operator: a token of the chart's own ServiceAccount.
_ACCOUNTS: dict[str, Path] = {}


@pytest.fixture
async def namespace(api: Api, cluster: k8s.Cluster, tmp_path: Path) -> str:
    name = f"op-{uuid.uuid4().hex[:8]}"
    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    _ACCOUNTS[name] = await chart_account(api, cluster, name, tmp_path)
    return name


@pytest.fixture(scope="module")
async def cell_tenants(stack: Stack) -> AsyncIterator[str]:
    """A second tenants service, standing for the cells' own (pods never run here): its own
    database and topic prefix, as a cell has. Its address serves every cell in these tests."""
    from lianluo.services.tenants.app import build
    from lianluo.services.tenants.settings import TenantsSettings

    name = f"cellplane_{uuid.uuid4().hex[:8]}"
    infra.create_database(stack.config.database_url, name)
    base = stack.database_url.rsplit("/", 1)[0]
    env = stack.env(LIANLUO_GRPC_PORT="0", LIANLUO_DATABASE_URL=f"{base}/{name}",
                    LIANLUO_TOPIC_PREFIX=f"{name}.")  # fmt: skip
    service = await build(TenantsSettings(**{k[8:].lower(): v for k, v in env.items()}))
    task = asyncio.create_task(service.serve())
    while not service.grpc.port:
        await asyncio.sleep(0.02)
    yield f"127.0.0.1:{service.grpc.port}"
    service.request_stop()
    await task


@pytest.fixture(scope="module")
async def operator_env(
    cluster: k8s.Cluster, stack: Stack, tenants_service: Served, cell_tenants: str
) -> AsyncIterator[dict[str, str]]:
    """The operator's settings: small cells (1000 sessions, 3 tenants) on this session's stack."""
    prefix = f"op{uuid.uuid4().hex[:8]}_"
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "LIANLUO_OPERATOR_IMAGE": "registry.local/lianluo:test",
        "LIANLUO_OPERATOR_TENANTS_ADDRESS": tenants_service.address,
        "LIANLUO_OPERATOR_CELL_TENANTS_ADDRESS": cell_tenants,
        "LIANLUO_OPERATOR_ADMIN_KEY": ADMIN_KEY,
        "LIANLUO_OPERATOR_KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
        "LIANLUO_OPERATOR_DATABASE_ADMIN_URL": stack.database_url,
        "LIANLUO_OPERATOR_DATABASE_PREFIX": prefix,
        "LIANLUO_OPERATOR_CELL_MAX_SESSIONS": "1000",
        "LIANLUO_OPERATOR_CELL_MAX_TENANTS": "3",
        "LIANLUO_OPERATOR_CELL_REPLICAS": "2",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "select datname from pg_database where datname like $1", prefix + "%"
        )
        for row in rows:
            await conn.execute(f'drop database if exists "{row["datname"]}" with (force)')
        # The cells' service roles: their grants went with the databases.
        roles = await conn.fetch("select rolname from pg_roles where rolname like $1", prefix + "%")
        for row in roles:
            await conn.execute(f'drop role if exists "{row["rolname"]}"')
    finally:
        await conn.close()


@pytest.fixture
async def tenants_stub(tenants_service: Served) -> AsyncIterator[rpc.TenantServiceStub]:
    async with grpc.aio.insecure_channel(tenants_service.address) as channel:
        yield rpc.TenantServiceStub(channel)


@contextlib.contextmanager
def operator(namespace: str) -> Iterator[KopfRunner]:
    """The operator, watching `namespace` with only the rights the chart gives it."""
    args = ["run", "--standalone", "--namespace", namespace, "-m", "lianluo.operator.handlers"]
    admin = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(_ACCOUNTS[namespace])
    try:
        with KopfRunner(args, timeout=60) as runner:
            yield runner
    finally:
        if admin is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = admin


def tenant(name: str, sessions: int, **extra: Any) -> dict[str, Any]:
    spec = {
        "displayName": name.title(),
        "plan": "business",
        "expectedConcurrentSessions": sessions,
        "channels": ["web", "phone"],
        **extra,
    }
    return {
        "apiVersion": "lianluo.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def phase(api: Api, namespace: str, name: str, wanted: str) -> dict[str, Any] | None:
    found = await api.get("Tenant", namespace, name)
    return found if found and (found.get("status") or {}).get("phase") == wanted else None


async def placed_in(api: Api, namespace: str, name: str) -> str | None:
    found = await api.get("Tenant", namespace, name) or {}
    return (found.get("metadata", {}).get("annotations") or {}).get("lianluo.io/cell")


async def children_of(api: Api, namespace: str, cell: str) -> dict[str, list[dict[str, Any]]]:
    selector = f"lianluo.io/cell={cell}"
    kinds = ("Deployment", "Service", "ConfigMap", "NetworkPolicy", "Job")
    return {kind: await api.list(kind, namespace, selector) for kind in kinds}


async def all_children(api: Api, namespace: str, cell: str) -> dict[str, list[dict[str, Any]]]:
    found = await children_of(api, namespace, cell)
    per_service = ("Deployment", "Service", "ConfigMap", "NetworkPolicy")
    complete = all(len(found[k]) == len(SERVICES) for k in per_service)
    return found if complete and found["Job"] else {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"plan": "gold"}, "spec.plan"),
        ({"expectedConcurrentSessions": 0}, "spec.expectedConcurrentSessions"),
        ({"channels": ["fax"]}, "spec.channels"),
        # What the tenants API would refuse later, refused by the API server at once.
        ({"channels": None}, "spec.channels"),
        ({"channels": []}, "spec.channels"),
        ({"channels": ["web", "web"]}, "spec.channels"),
        ({"initialAdmin": {"name": "ops admin"}}, "spec.initialAdmin.name"),
        ({"cell": "Cell_1"}, "spec.cell"),
    ],
)
async def test_the_crd_refuses_a_tenant_out_of_bounds(
    api: Api, namespace: str, change: dict[str, Any], field: str
) -> None:
    manifest = tenant(unique("bad"), 10)
    manifest["spec"].update(change)
    with pytest.raises(ApiError) as refused:
        await api.create("Tenant", namespace, manifest)
    assert refused.value.status == 422
    assert field in str(refused.value)


async def test_the_crd_refuses_a_tenant_name_the_tenants_api_would(
    api: Api, namespace: str
) -> None:
    with pytest.raises(ApiError) as refused:
        await api.create("Tenant", namespace, tenant(f"1{unique('acme')}", 10))
    assert refused.value.status == 422
    assert "metadata.name" in str(refused.value)


async def test_a_tenant_gets_a_cloned_cell_then_is_provisioned(
    api: Api, namespace: str, operator_env: dict[str, str], tenants_stub: rpc.TenantServiceStub
) -> None:
    name = unique("acme")
    admin = {"name": "ops.admin", "displayName": "Ops Admin"}
    with operator(namespace):
        await api.create("Tenant", namespace, tenant(name, 100, initialAdmin=admin))
        children = await eventually(lambda: all_children(api, namespace, "cell-1"))
        for d in children["Deployment"]:
            service = d["metadata"]["labels"]["app.kubernetes.io/name"]
            container = d["spec"]["template"]["spec"]["containers"][0]
            assert container["image"] == "registry.local/lianluo:test"
            assert container["args"] == ["serve", service]
            # Voice runs one replica: a phone's registration and its calls are one process's.
            assert d["spec"]["replicas"] == (1 if service == "voice" else 2)
            assert container["envFrom"] == [{"configMapRef": {"name": f"cell-1-{service}"}}]
            secret_env = {
                e["name"]: e["valueFrom"]["secretKeyRef"]
                for e in container["env"]
                if "secretKeyRef" in e["valueFrom"]
            }
            assert secret_env["LIANLUO_DATABASE_URL"] == {
                "name": f"cell-1-database-{service}",
                "key": "url",
            }
            assert d["metadata"]["ownerReferences"][0]["kind"] == "Cell"
        for cm in children["ConfigMap"]:
            assert cm["data"]["LIANLUO_TOPIC_PREFIX"] == "cell-1."
            assert (
                cm["data"]["LIANLUO_KAFKA_BOOTSTRAP_SERVERS"]
                == operator_env["LIANLUO_OPERATOR_KAFKA_BOOTSTRAP_SERVERS"]
            )
            assert cm["data"]["LIANLUO_CELL_MAX_SESSIONS"] == "1000"
        assert {s["spec"]["ports"][0]["port"] for s in children["Service"]} == {50051}
        # Inside, only the platform's own pods reach a service's gRPC; outside, clients reach
        # only the ports they use.
        for policy in children["NetworkPolicy"]:
            service = policy["metadata"]["labels"]["app.kubernetes.io/name"]
            rules = policy["spec"]["ingress"]
            own = {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "lianluo"}}}
            assert rules[0] == {"from": [own], "ports": [{"protocol": "TCP", "port": 50051}]}
            public = {(p["protocol"], p.get("port")) for r in rules[2:] for p in r["ports"]}
            assert public == {
                "media": {("TCP", 50051)},
                "gateway": {("TCP", 8088), ("TCP", 2525)},
                "console": {("TCP", 8089)},
                "voice": {("TCP", 5060), ("UDP", None)},
            }.get(service, set()), service
        assert children["Job"][0]["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "migrate"
        ]
        secret = await api.call("GET", f"/api/v1/namespaces/{namespace}/secrets/cell-1-database")
        url = base64.b64decode(secret["data"]["url"]).decode()
        assert url.endswith("/" + operator_env["LIANLUO_OPERATOR_DATABASE_PREFIX"] + "cell_1")
        conn = await asyncpg.connect(url)  # the operator created the cell's database
        await conn.close()

        waiting = await eventually(lambda: phase(api, namespace, name, "Placed"))
        assert waiting["status"]["cell"] == "cell-1"
        await api.make_ready(namespace, "cell-1")
        ready = await eventually(lambda: phase(api, namespace, name, "Ready"))

    conditions = {c["type"]: c["status"] for c in ready["status"]["conditions"]}
    assert ready["metadata"]["finalizers"] == ["lianluo.io/cleanup"]
    assert not [a for a in ready["metadata"]["annotations"] if not a.startswith("lianluo.io/")]
    assert conditions == {
        "Placed": "True",
        "CellReady": "True",
        "Provisioned": "True",
        "Ready": "True",
    }
    provisioned = await tenants_stub.GetTenant(
        pb.GetTenantRequest(tenant_id=ready["status"]["tenantId"]), metadata=ADMIN
    )
    assert (provisioned.name, provisioned.expected_concurrent_sessions) == (name, 100)
    assert provisioned.plan == pb.PLAN_BUSINESS
    assert list(provisioned.channels) == [common.CHANNEL_WEB, common.CHANNEL_PHONE]
    assert provisioned.cell == "cell-1", "the placement is recorded for the edge"
    async with grpc.aio.insecure_channel(
        operator_env["LIANLUO_OPERATOR_CELL_TENANTS_ADDRESS"]
    ) as ch:
        in_cell = await rpc.TenantServiceStub(ch).GetTenant(
            pb.GetTenantRequest(tenant_id=provisioned.id), metadata=ADMIN
        )
    assert (in_cell.id, in_cell.name, in_cell.cell) == (provisioned.id, name, "cell-1")
    cell = await api.get("Cell", namespace, "cell-1")
    assert cell is not None
    assert (cell["status"]["phase"], cell["status"]["tenants"]) == ("Ready", 1)
    assert cell["status"]["load"]["sessions"] == 100
    reasons = {e["reason"] for e in await api.events(namespace)}
    assert {"CellCloned", "Placed", "Provisioned", "Ready"} <= reasons


async def test_a_full_cell_leads_to_a_second_cell(
    api: Api, namespace: str, operator_env: dict[str, str]
) -> None:
    # Cells hold 1000 sessions and 3 tenants.
    names = [unique(p) for p in ("big", "mid", "large", "small", "tiny")]
    sessions = [600, 300, 500, 50, 50]
    with operator(namespace):
        for name, wanted in zip(names, sessions, strict=True):
            await api.create("Tenant", namespace, tenant(name, wanted))
            await eventually(lambda n=name: placed_in(api, namespace, n))
            for cell in ("cell-1", "cell-2"):
                if await api.get("Cell", namespace, cell) and await all_children(
                    api, namespace, cell
                ):
                    await api.make_ready(namespace, cell)
        for name in names:
            await eventually(lambda n=name: phase(api, namespace, n, "Ready"))
    placements = [await placed_in(api, namespace, n) for n in names]
    # 500 does not fit beside 900; 50 fits best in cell-1; then cell-1 has its 3 tenants.
    assert placements == ["cell-1", "cell-1", "cell-2", "cell-1", "cell-2"]
    cells = {c["metadata"]["name"]: c["status"] for c in await api.list("Cell", namespace)}
    assert sorted(cells) == ["cell-1", "cell-2"]
    assert (cells["cell-1"]["tenants"], cells["cell-1"]["load"]["sessions"]) == (3, 950)
    assert (cells["cell-2"]["tenants"], cells["cell-2"]["load"]["sessions"]) == (2, 550)


async def test_deleting_a_tenant_deprovisions_it_and_frees_its_cell(
    api: Api, namespace: str, operator_env: dict[str, str], tenants_stub: rpc.TenantServiceStub
) -> None:
    name = unique("leaving")
    with operator(namespace):
        await api.create("Tenant", namespace, tenant(name, 200))
        await eventually(lambda: all_children(api, namespace, "cell-1"))
        await api.make_ready(namespace, "cell-1")
        ready = await eventually(lambda: phase(api, namespace, name, "Ready"))
        tenant_id = ready["status"]["tenantId"]

        # A spec change reaches the tenants API.
        change = {"spec": {"displayName": "Leaving Soon", "expectedConcurrentSessions": 250}}
        await api.patch("Tenant", namespace, name, change)

        async def updated() -> bool:
            found = await tenants_stub.GetTenant(
                pb.GetTenantRequest(tenant_id=tenant_id), metadata=ADMIN
            )
            return (found.display_name, found.expected_concurrent_sessions) == ("Leaving Soon", 250)

        await eventually(updated)

        # A cell that still has a tenant is not deleted; its status says why.
        await api.delete("Cell", namespace, "cell-1")

        async def blocked() -> bool:
            cell = await api.get("Cell", namespace, "cell-1") or {}
            conditions = (cell.get("status") or {}).get("conditions", [])
            return any(c["type"] == "DeletionBlocked" and name in c["message"] for c in conditions)

        await eventually(blocked)
        assert await phase(api, namespace, name, "Ready")

        await api.delete("Tenant", namespace, name)
        await eventually(lambda: _gone(api, "Tenant", namespace, name))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await tenants_stub.GetTenant(pb.GetTenantRequest(tenant_id=tenant_id), metadata=ADMIN)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        # With its last tenant gone the cell goes too, and its children with it.
        await eventually(lambda: _gone(api, "Cell", namespace, "cell-1"), within=60)
    await eventually(lambda: _no_children(api, namespace, "cell-1"), within=60)
    assert "Deprovisioned" in {e["reason"] for e in await api.events(namespace)}


async def _reasons(api: Api, namespace: str, name: str) -> dict[str, str]:
    """The reasons and messages of the Events posted about the Tenant `name`."""
    return {
        e["reason"]: e.get("message", "")
        for e in await api.events(namespace)
        if e["involvedObject"]["name"] == name
    }


async def test_a_tenant_too_big_for_any_cell_fails_visibly_then_is_admitted_when_fixed(
    api: Api, namespace: str, operator_env: dict[str, str]
) -> None:
    name = unique("huge")
    with operator(namespace):
        await api.create("Tenant", namespace, tenant(name, 5000))  # cells hold 1000
        failed = await eventually(lambda: phase(api, namespace, name, "Failed"))
        ready = {c["type"]: c for c in failed["status"]["conditions"]}["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "Failed")
        assert "5000 expected sessions exceed" in ready["message"]
        assert "exceed" in (await _reasons(api, namespace, name)).get("NoRoom", "")
        assert await placed_in(api, namespace, name) is None
        assert await api.list("Cell", namespace) == [], "no cell is cloned for it"

        await api.patch("Tenant", namespace, name, {"spec": {"expectedConcurrentSessions": 800}})
        await eventually(lambda: all_children(api, namespace, "cell-1"))
        await api.make_ready(namespace, "cell-1")
        admitted = await eventually(lambda: phase(api, namespace, name, "Ready"))
    assert admitted["status"]["cell"] == "cell-1"
    assert admitted["status"]["tenantId"]


async def test_a_tenant_refused_half_way_leaves_nothing_live_and_frees_its_room(
    api: Api, namespace: str, operator_env: dict[str, str], tenants_stub: rpc.TenantServiceStub
) -> None:
    """The registry accepts the tenant, its cell refuses it: the registry's copy is deleted,
    the cell counts it no more, and once the cause is gone a spec change admits it."""
    name = unique("clash")
    async with grpc.aio.insecure_channel(
        operator_env["LIANLUO_OPERATOR_CELL_TENANTS_ADDRESS"]
    ) as ch:
        in_cell = rpc.TenantServiceStub(ch)
        squatter = await in_cell.CreateTenant(
            pb.CreateTenantRequest(tenant=tenant_message(name, tenant(name, 10)["spec"])),
            metadata=ADMIN,
        )
        with operator(namespace):
            await api.create("Tenant", namespace, tenant(name, 300))
            await eventually(lambda: all_children(api, namespace, "cell-1"))
            await api.make_ready(namespace, "cell-1")
            failed = await eventually(lambda: phase(api, namespace, name, "Failed"))
            assert "ALREADY_EXISTS" in (await _reasons(api, namespace, name)).get("Refused", "")
            assert "tenantId" not in failed["status"]
            assert await placed_in(api, namespace, name) is None
            assert name not in await _all_tenant_names(tenants_stub), "nothing half-made stays"

            async def released() -> bool:
                cell = await api.get("Cell", namespace, "cell-1") or {}
                status = cell.get("status") or {}
                return (status.get("tenants"), status.get("load", {}).get("sessions")) == (0, 0)

            await eventually(released)

            await in_cell.DeleteTenant(
                pb.DeleteTenantRequest(tenant_id=squatter.id), metadata=ADMIN
            )
            await api.patch("Tenant", namespace, name, {"spec": {"displayName": "Clash Again"}})
            ready = await eventually(lambda: phase(api, namespace, name, "Ready"))
            tenant_id = ready["status"]["tenantId"]
            found = await in_cell.GetTenant(
                pb.GetTenantRequest(tenant_id=tenant_id), metadata=ADMIN
            )
            assert found.display_name == "Clash Again"

            await api.delete("Tenant", namespace, name)
            await eventually(lambda: _gone(api, "Tenant", namespace, name))
            for stub in (tenants_stub, in_cell):
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await stub.GetTenant(pb.GetTenantRequest(tenant_id=tenant_id), metadata=ADMIN)
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def _gone(api: Api, kind: str, namespace: str, name: str) -> bool:
    return await api.get(kind, namespace, name) is None


async def _no_children(api: Api, namespace: str, cell: str) -> bool:
    return not any((await children_of(api, namespace, cell)).values())


async def test_a_killed_operator_converges_without_duplicates(
    api: Api,
    namespace: str,
    operator_env: dict[str, str],
    tenants_stub: rpc.TenantServiceStub,
    tmp_path: Path,
) -> None:
    names = [unique("first"), unique("second")]
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "lianluo.operator", "--namespace", namespace, "--liveness", ""],
            stdout=out,
            stderr=out,
        )
    try:
        for name in names:
            await api.create("Tenant", namespace, tenant(name, 400))
        await eventually(lambda: api.list("Deployment", namespace, "lianluo.io/cell=cell-1"))
    finally:
        process.send_signal(signal.SIGKILL)  # no chance to finish anything it was doing
        await process.wait()
    # Its log is one JSON object per line, each with its time, as the services write theirs.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines and all(line["timestamp"] and line["message"] for line in lines)
    with operator(namespace):
        await eventually(lambda: all_children(api, namespace, "cell-1"))
        await api.make_ready(namespace, "cell-1")
        for name in names:
            await eventually(lambda n=name: phase(api, namespace, n, "Ready"))
        await asyncio.sleep(1)  # a duplicate would have been made by now
    assert [c["metadata"]["name"] for c in await api.list("Cell", namespace)] == ["cell-1"]
    known = await _all_tenant_names(tenants_stub)
    assert [known.count(n) for n in names] == [1, 1]


async def test_an_image_upgrade_migrates_the_cell_again(
    api: Api, namespace: str, operator_env: dict[str, str]
) -> None:
    """A new image (what `helm upgrade` gives the operator) makes each cell's migrate Job
    anew: the cell is not Ready again until it has run, and its status names it."""
    cell = "cell-9"
    await api.create("Cell", namespace, cell_manifest(cell, 1000, 3, 2, "v1"))

    async def migrated(image: str) -> dict[str, Any] | None:
        found = await api.get("Cell", namespace, cell) or {}
        status = found.get("status") or {}
        migration = status.get("migration") or {}
        done = status.get("phase") == "Ready" and migration.get("complete")
        return migration if done and migration.get("image") == image else None

    with operator(namespace):
        first = await eventually(lambda: all_children(api, namespace, cell))
        (old_job,) = (j["metadata"]["name"] for j in first["Job"])
        await api.make_ready(namespace, cell)
        assert (await eventually(lambda: migrated("registry.local/lianluo:test")))["job"] == old_job
    os.environ["LIANLUO_OPERATOR_IMAGE"] = "registry.local/lianluo:next"
    try:
        with operator(namespace):

            async def upgraded() -> list[str] | None:
                jobs = [
                    j["metadata"]["name"] for j in (await children_of(api, namespace, cell))["Job"]
                ]
                return jobs if jobs and old_job not in jobs else None

            (new_job,) = await eventually(upgraded)
            found = await api.get("Cell", namespace, cell) or {}
            assert (found.get("status") or {}).get("phase") != "Ready"
            for d in (await children_of(api, namespace, cell))["Deployment"]:
                image = d["spec"]["template"]["spec"]["containers"][0]["image"]
                assert image == "registry.local/lianluo:next"
            await api.make_ready(namespace, cell)
            done = await eventually(lambda: migrated("registry.local/lianluo:next"))
            assert done["job"] == new_job
    finally:
        os.environ["LIANLUO_OPERATOR_IMAGE"] = operator_env["LIANLUO_OPERATOR_IMAGE"]


async def _all_tenant_names(stub: rpc.TenantServiceStub) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        page = await stub.ListTenants(
            pb.ListTenantsRequest(page=common.PageRequest(page_size=500, page_token=token)),
            metadata=ADMIN,
        )
        names += [t.name for t in page.tenants]
        token = page.page.next_page_token
        if not token:
            return names


async def _secret_url(api: Api, namespace: str, name: str) -> str:
    secret = await api.call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    return base64.b64decode(secret["data"]["url"]).decode()


async def test_each_cell_service_connects_as_its_own_least_privileged_role(
    api: Api, namespace: str, operator_env: dict[str, str], stack: Stack
) -> None:
    """A cell's services never hold the admin role: each gets a role that reaches its own
    schema's rows and nothing else, and that is enough to serve."""
    from lianluo.runtime.service import migrate
    from lianluo.services.acd.app import SPEC as ACD
    from lianluo.services.tenants.app import SPEC as TENANTS
    from lianluo.services.tenants.app import build
    from lianluo.services.tenants.settings import TenantsSettings

    cell = "cell-5"
    await api.create("Cell", namespace, cell_manifest(cell, 1000, 3, 2, "v1"))
    with operator(namespace):
        children = await eventually(lambda: all_children(api, namespace, cell))
    for d in children["Deployment"]:
        service = d["metadata"]["labels"]["app.kubernetes.io/name"]
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        ref = env["LIANLUO_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{cell}-database-{service}", "key": "url"}
    job = children["Job"][0]["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e for e in job["env"]}
    assert job_env["LIANLUO_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
        f"{cell}-database"
    )
    admin_url = await _secret_url(api, namespace, f"{cell}-database")
    tenants_url = await _secret_url(api, namespace, f"{cell}-database-tenants")
    acd_url = await _secret_url(api, namespace, f"{cell}-database-acd")
    prefix = f"{cell}-{uuid.uuid4().hex[:6]}."

    def settings(url: str, **extra: str) -> TenantsSettings:
        env = stack.env(LIANLUO_GRPC_PORT="0", LIANLUO_DATABASE_URL=url,
                        LIANLUO_TOPIC_PREFIX=prefix, **extra)  # fmt: skip
        return TenantsSettings(**{k[8:].lower(): v for k, v in env.items()})

    # What the migrate Job does, as the admin role.
    await migrate(TENANTS, settings(admin_url))
    await migrate(ACD, settings(admin_url))

    # The tenants service serves on its own role: it writes, relays its outbox, reads back.
    service = await build(settings(tenants_url, LIANLUO_AUTO_MIGRATE="false"))
    task = asyncio.create_task(service.serve())
    try:
        while not service.grpc.port:
            await asyncio.sleep(0.02)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as ch:
            stub = rpc.TenantServiceStub(ch)
            created = await stub.CreateTenant(
                pb.CreateTenantRequest(tenant=tenant_message("roles", tenant("roles", 5)["spec"])),
                metadata=ADMIN,
            )
            found = await stub.GetTenant(pb.GetTenantRequest(tenant_id=created.id), metadata=ADMIN)
            assert found.name == "roles"
        admin = await asyncpg.connect(admin_url)
        try:

            async def relayed() -> bool:
                return await admin.fetchval("select count(*) from tenants.outbox") == 0

            await eventually(relayed)
        finally:
            await admin.close()
    finally:
        service.request_stop()
        await task

    # The ACD's role: its own rows, nothing more.
    acd = await asyncpg.connect(acd_url)
    try:
        assert await acd.fetchval("select count(*) from acd.agents") == 0
        for statement in (
            "select count(*) from tenants.tenants",
            "create table acd.extra (id int)",
            "drop table acd.agents",
            'create database "stolen"',
            "create role stolen",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await acd.execute(statement)
    finally:
        await acd.close()


async def test_the_opt_in_uninstall_deprovisions_every_tenant_and_removes_every_cell(
    api: Api,
    cluster: k8s.Cluster,
    namespace: str,
    operator_env: dict[str, str],
    tenants_stub: rpc.TenantServiceStub,
    stack: Stack,
    tmp_path: Path,
) -> None:
    """`helm uninstall` with uninstall.teardown: its pre-delete hook, run with the hook's own
    account while the operator runs, leaves no tenant, cell, database or role behind."""
    hook = await chart_account(
        api, cluster, namespace, tmp_path, "templates/teardown.yaml", "teardown",
        ("uninstall.teardown=true", "uninstall.dropDatabases=true"),
    )  # fmt: skip
    names = [unique("leaving"), unique("leaving")]
    prefix = operator_env["LIANLUO_OPERATOR_DATABASE_PREFIX"]
    with operator(namespace):
        for name in names:
            await api.create("Tenant", namespace, tenant(name, 100))
        await eventually(lambda: all_children(api, namespace, "cell-1"))
        await api.make_ready(namespace, "cell-1")
        ids = [
            (await eventually(lambda n=name: phase(api, namespace, n, "Ready")))["status"][
                "tenantId"
            ]
            for name in names
        ]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lianluo.cli", "teardown", f"--namespace={namespace}",
            "--drop-databases", "--timeout=90",
            env={**os.environ, "KUBECONFIG": str(hook),
                 "LIANLUO_OPERATOR_DATABASE_ADMIN_URL": stack.database_url,
                 "LIANLUO_OPERATOR_DATABASE_PREFIX": prefix},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode()
    assert process.returncode == 0, text
    assert "deleting 2 tenant(s)" in text and "teardown complete" in text
    assert await api.list("Tenant", namespace) == []
    assert await api.list("Cell", namespace) == []
    for tenant_id in ids:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await tenants_stub.GetTenant(pb.GetTenantRequest(tenant_id=tenant_id), metadata=ADMIN)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    conn = await asyncpg.connect(stack.database_url)
    try:
        database = prefix + "cell_1"
        assert not await conn.fetchval("select 1 from pg_database where datname = $1", database)
        left = "select rolname from pg_roles where rolname like $1"
        assert await conn.fetch(left, database + "%") == []
    finally:
        await conn.close()


async def _replicas(api: Api, namespace: str, cell: str) -> dict[str, int]:
    found = await api.list("Deployment", namespace, f"lianluo.io/cell={cell}")
    return {d["metadata"]["labels"]["app.kubernetes.io/name"]: d["spec"]["replicas"] for d in found}


async def test_a_scheduled_standby_pool_scales_the_cell_and_lets_it_go(
    api: Api, namespace: str, operator_env: dict[str, str]
) -> None:
    """100 seats with a standby pool of 900: inside the window the cell runs for 1,000 seats
    (250 a replica), and after it back at its own size."""
    name = unique("peak")
    now = datetime.now(UTC)
    window = {
        "start": _rfc3339(now - timedelta(minutes=1)),
        "end": _rfc3339(now + timedelta(hours=1)),
    }
    spec = {"seats": 100, "standby": {"seats": 900, "schedule": [window]}}
    with operator(namespace):
        await api.create("Tenant", namespace, tenant(name, 100, **spec))
        await eventually(lambda: all_children(api, namespace, "cell-1"))

        async def scaled(wanted: int) -> bool:
            found = await _replicas(api, namespace, "cell-1")
            # Voice runs one replica whatever the seats (a phone's calls are one process's).
            return found == {s: (1 if s == "voice" else wanted) for s in SERVICES}

        await eventually(lambda: scaled(4))
        cell = await api.get("Cell", namespace, "cell-1") or {}
        assert cell["spec"]["seats"] == 1000
        found = await api.get("Tenant", namespace, name) or {}
        assert found["status"]["seats"]["active"] == 1000
        assert found["status"]["seats"]["standby"] == 900
        assert await eventually(lambda: _has_event(api, namespace, name, "SurgeStarted"))

        # The window closes early: the pool goes home and the cell shrinks back.
        past = {
            "start": _rfc3339(now - timedelta(hours=2)),
            "end": _rfc3339(now - timedelta(hours=1)),
        }
        await api.patch("Tenant", namespace, name, {"spec": {"standby": {"schedule": [past]}}})
        assert await eventually(lambda: scaled(2))
        assert await eventually(lambda: _has_event(api, namespace, name, "SurgeEnded"))

        # A window the schema cannot refuse is said once, on the Tenant.
        backwards = {"start": window["end"], "end": window["start"]}
        await api.patch("Tenant", namespace, name, {"spec": {"standby": {"schedule": [backwards]}}})

        async def invalid() -> bool:
            t = await api.get("Tenant", namespace, name) or {}
            return any(
                c["type"] == "SeatsValid" and c["status"] == "False"
                for c in (t.get("status") or {}).get("conditions", [])
            )

        await eventually(invalid)
        said = await eventually(lambda: _has_event(api, namespace, name, "SeatsInvalid"))
        assert "not after its start" in said
        assert (await _replicas(api, namespace, "cell-1"))["media"] == 2


async def _has_event(api: Api, namespace: str, name: str, reason: str) -> str:
    """The message of the Event `reason` about the Tenant `name`, once it is posted."""
    return (await _reasons(api, namespace, name)).get(reason, "")


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _rows(conn: asyncpg.Connection, tenant_id: str) -> dict[str, list[str]]:
    """Every row of the tenant in a cell's database, by table, as JSON text, sorted."""
    found = {}
    for table in await tenant_tables(conn):
        query = f"select to_jsonb(t)::text from {table.qualified} t where {table.of_tenant}"
        found[table.key] = sorted(r[0] for r in await conn.fetch(query, tenant_id))
    return found


def _ends(cell: Cell, name: str) -> CellEnds:
    """What a move reaches of a local cell, as the operator would of its own."""
    return CellEnds(
        name=name,
        database_url=cell.env["LIANLUO_DATABASE_URL"],
        tenants_address=cell.address("tenants"),
        kafka_bootstrap_servers=cell.env["LIANLUO_KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=cell.env["LIANLUO_TOPIC_PREFIX"],
    )


async def _served_in(api: Api, namespace: str, name: str, cell: str) -> dict[str, Any] | None:
    found = await api.get("Tenant", namespace, name) or {}
    status = found.get("status") or {}
    moved = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Moved")
    return found if status.get("cell") == cell and moved == "True" else None


@pytest.fixture
def move_cells(
    stack: Stack, operator_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Cell, Cell]]:
    """Two cells as local processes, with the databases and topics the operator gives cells
    named move-1 and move-2."""
    prefix = operator_env["LIANLUO_OPERATOR_DATABASE_PREFIX"]
    with (
        running_cell(stack, tmp_path / "a", prefix + "move_1",
                     LIANLUO_TOPIC_PREFIX="move-1.") as a,
        running_cell(stack, tmp_path / "b", prefix + "move_2",
                     LIANLUO_TOPIC_PREFIX="move-2.") as b,
    ):  # fmt: skip
        yield a, b


async def test_a_tenant_moves_between_two_cells_during_a_conversation_which_goes_on(
    api: Api,
    namespace: str,
    operator_env: dict[str, str],
    tenants_service: Served,
    edge: Service,
    stack: Stack,
    move_cells: tuple[Cell, Cell],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two cells run here as local processes (their own databases and topics, named as the
    operator names a cell's). A customer and an agent talk in the first; the Tenant's
    `spec.cell` is changed to the second: the operator drains, copies, serves, switches the
    edge and retires, and the two go on with the same conversation in the second cell, with the
    same key and sign-in."""
    prefix = operator_env["LIANLUO_OPERATOR_DATABASE_PREFIX"]
    a, b = move_cells
    addresses = {"move-1": a.address("tenants"), "move-2": b.address("tenants")}
    monkeypatch.setenv("LIANLUO_OPERATOR_CELL_ADDRESSES", json.dumps(addresses))
    with operator(namespace):
        for cell in ("move-1", "move-2"):
            await api.create("Cell", namespace, cell_manifest(cell, 1000, 3, 1, "v1"))
            await eventually(lambda c=cell: all_children(api, namespace, c))  # type: ignore[misc]
            await api.make_ready(namespace, cell)
        name = unique("moving")
        await api.create("Tenant", namespace, tenant(name, 100, cell="move-1"))
        ready = await eventually(lambda: phase(api, namespace, name, "Ready"))
        assert ready["status"]["cell"] == "move-1", "spec.cell chose the cell"
        await _talk_then_move(api, namespace, name, ready["status"]["tenantId"], a, b, edge)
        assert await _has_event(api, namespace, name, "Moved")
        tenant_id = ready["status"]["tenantId"]
        # Run again (after a crash half-way, say), the move finishes without copying twice.
        tenants = TenantsApi(tenants_service.address, ADMIN_KEY)
        again = await Mover(tenants).move(tenant_id, _ends(a, "move-1"), _ends(b, "move-2"))
        await tenants.close()
        assert again == {}
        # A database at other migrations is refused before anything is written.
        infra.create_database(stack.config.database_url, prefix + "move_blank")
        base = stack.database_url.rsplit("/", 1)[0]
        target = await asyncpg.connect(b.env["LIANLUO_DATABASE_URL"])
        blank = await asyncpg.connect(f"{base}/{prefix}move_blank")
        try:
            with pytest.raises(CopyRefused, match="migrations"):
                await copy_tenant(target, blank, tenant_id)
        finally:
            await target.close()
            await blank.close()
        for cell, count in (("move-1", 0), ("move-2", 1)):
            found = await eventually(lambda c=cell: api.get("Cell", namespace, c))  # type: ignore[misc]
            assert found["status"]["tenants"] == count, cell
        # A move to a cell that does not exist is refused, and the tenant stays served.
        await api.patch("Tenant", namespace, name, {"spec": {"cell": "move-9"}})
        refused = await eventually(lambda: _has_event(api, namespace, name, "MoveRefused"))
        assert "there is no cell 'move-9'" in refused
        still = await api.get("Tenant", namespace, name)
        assert still is not None and still["status"]["cell"] == "move-2"


async def _talk_then_move(
    api: Api, namespace: str, name: str, tenant_id: str, a: Cell, b: Cell, edge: Service
) -> None:
    """A conversation in cell `a`; the tenant moved to `b` by its spec; the conversation goes
    on in `b`."""
    tch_a = grpc.aio.insecure_channel(a.address("tenants"))
    admin_a = Client(tch_a, ADMIN_KEY)
    key = await admin_a.keys.CreateApiKey(
        pb.CreateApiKeyRequest(tenant_id=tenant_id, scope=pb.API_KEY_SCOPE_TENANT),
        metadata=ADMIN,
    )
    client = Client(tch_a, key.secret)
    await client.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=tenant_id, queue=queue()), metadata=client.md
    )
    await client.agents.CreateAgent(
        pb.CreateAgentRequest(tenant_id=tenant_id, agent=agent("li.wei")), metadata=client.md
    )
    await client.users.CreateUser(
        pb.CreateUserRequest(
            tenant_id=tenant_id, user=user("li", pb.ROLE_AGENT, agent="li.wei"), password="pw-" * 4
        ),
        metadata=client.md,
    )
    other, _ = await onboard(admin_a)  # a tenant of the first cell, which stays there
    session = await Session.login(tch_a, name, "li", "pw-" * 4)
    li = await retrying(lambda: AgentAtWork(a, session, tenant_id).start())
    media_a = grpc.aio.insecure_channel(a.address("media"))
    started = await retrying(
        lambda: media_rpc.MediaServiceStub(media_a).StartInteraction(
            mpb.StartInteractionRequest(
                tenant_id=tenant_id,
                channel=common.CHANNEL_WEB,
                media=common.MEDIA_TYPE_CHAT,
                queue="cards",
                customer=mpb.Customer(id="cust-1"),
                request_id="move-1",
            ),
            metadata=client.md,
        )
    )
    interaction_id = started.interaction.id
    join = mpb.Join(
        tenant_id=tenant_id,
        interaction_id=interaction_id,
        role=mpb.PARTICIPANT_ROLE_CUSTOMER,
        subject_id="cust-1",
    )
    customer = await StreamClient.connect(media_a, client.key, join)
    customer.send_text("My card was swallowed by the machine.", "c1")
    talk = await li.answer(interaction_id)
    await talk.wait_for(lambda f: f.message.content.text.startswith("My card was swallowed"))
    talk.send_text("I am sorry. Which machine was it?", "a1")
    said = await customer.wait_for(lambda f: f.message.content.text.startswith("I am sorry"))
    source = await asyncpg.connect(a.env["LIANLUO_DATABASE_URL"])
    target = await asyncpg.connect(b.env["LIANLUO_DATABASE_URL"])
    try:
        # What the first cell holds of the tenant once its services have done with the
        # conversation so far (routing and recording follow the messages by a moment).
        async with asyncio.timeout(60):
            await quiet(tenant_id, _ends(a, "move-1"), KafkaSecuritySettings(), 1.0)
        before = await _rows(source, tenant_id)

        # The move, while both are connected to the first cell.
        await api.patch("Tenant", namespace, name, {"spec": {"cell": "move-2"}})
        await eventually(lambda: _served_in(api, namespace, name, "move-2"), within=120)
        # The drain ended both streams in the first cell: nothing more was written there.
        for stream in (customer, talk):
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await stream.wait_for(lambda _f: False, 5)
            assert cut.value.code() == grpc.StatusCode.PERMISSION_DENIED

        after = await _rows(target, tenant_id)
        # The conversation, the routing, the customer and the record arrived as they were (the
        # tenants service's own rows changed on the way: suspended, then resumed).
        for table, rows in before.items():
            if not table.startswith("tenants."):
                assert after[table] == rows, table
        assert len(after["tenants.resources"]) == len(before["tenants.resources"])
        # The first cell holds nothing of the tenant any more, and all of the other tenant.
        left = {t: r for t, r in (await _rows(source, tenant_id)).items() if r}
        assert not left, left
        assert await has_rows(source, other.id) and not await has_rows(target, other.id)
        # Copied once: a second copy would double the tenant, and is refused.
        with pytest.raises(CopyRefused, match="already has"):
            await copy_tenant(target, target, tenant_id)
    finally:
        await source.close()
        await target.close()
    for stream in (customer, talk):
        await stream.close()
    await li.stop()

    # The edge directs the tenant's clients to the second cell.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.grpc.port}") as ech:
        where = edge_pb.LocateTenantRequest(tenant_id=tenant_id)
        located = edge_rpc.EdgeServiceStub(ech)
        await eventually(lambda: _located(located, where, "move-2"))

    # The same people, with the same key and the same sign-in, go on in the second cell.
    media_b = grpc.aio.insecure_channel(b.address("media"))
    join.last_seen_sequence = said.sequence
    customer = await StreamClient.connect(media_b, client.key, join)
    talk = await StreamClient.connect(
        media_b,
        await session.token(),
        mpb.Join(
            tenant_id=tenant_id,
            interaction_id=interaction_id,
            role=mpb.PARTICIPANT_ROLE_AGENT,
            subject_id=session.user.agent_id,
        ),
    )
    await talk.wait_for(lambda f: f.message.content.text.startswith("I am sorry"))
    customer.send_text("The one at the station.", "c2")
    heard = await talk.wait_for(lambda f: f.message.content.text == "The one at the station.")
    assert heard.sequence > said.sequence, "the timeline goes on where it was"
    talk.send_text("I have blocked it; a new card is on its way.", "a2")
    await customer.wait_for(lambda f: f.message.content.text.startswith("I have blocked it"))
    it = await media_rpc.MediaServiceStub(media_b).GetInteraction(
        mpb.GetInteractionRequest(tenant_id=tenant_id, interaction_id=interaction_id),
        metadata=client.md,
    )
    assert it.state == mpb.INTERACTION_STATE_CONNECTED
    # The second cell records on from where the first stopped: one chain, intact, with the
    # messages said after the move.
    recorded = recording_rpc.RecordingServiceStub(grpc.aio.insecure_channel(b.address("recording")))
    before_move = len(before["recording.record_entries"])
    checked = await eventually(
        lambda: _chain_longer_than(recorded, tenant_id, interaction_id, client.md, before_move)
    )
    assert checked.intact, checked
    # The first cell no longer knows the tenant.
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await rpc.TenantServiceStub(tch_a).GetTenant(
            pb.GetTenantRequest(tenant_id=tenant_id), metadata=ADMIN
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    for stream in (customer, talk):
        await stream.close()
    for channel in (tch_a, media_a, media_b):
        await channel.close()


async def _chain_longer_than(
    stub: Any, tenant_id: str, interaction_id: str, md: Any, entries: int
) -> Any:
    """The record's check once it holds more than `entries` entries."""
    checked = await stub.VerifyRecording(
        rpb.VerifyRecordingRequest(tenant_id=tenant_id, interaction_id=interaction_id),
        metadata=md,
    )
    return checked if checked.entries_checked > entries else None


async def _located(stub: Any, where: Any, cell: str) -> bool:
    try:
        return bool((await stub.LocateTenant(where, metadata=ADMIN)).cell == cell)
    except grpc.aio.AioRpcError:
        return False  # not learned yet


def test_helm_install_of_the_chart_reaches_deployed(cluster: k8s.Cluster) -> None:
    """The one chart installs on a real API server (1.20: no policy/v1 PDB or autoscaling/v2
    HPA there, so the chart leaves them out by the cluster's capabilities)."""
    helm_bin = str(helm.tools(fetch=False).helm)
    chart = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "lianluo"
    namespace = unique("helm")
    common = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace]
    installed = subprocess.run(
        [helm_bin, "install", "lianluo", str(chart), *common, "--create-namespace"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    status = subprocess.run(
        [helm_bin, "status", "lianluo", *common, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    release = json.loads(status.stdout)
    assert release["info"]["status"] == "deployed"
    kinds = {
        line.split(":", 1)[1].strip()
        for line in release["manifest"].splitlines()
        if line.startswith("kind:")
    }
    assert {"Deployment", "Service", "ServiceAccount"} <= kinds
