"""The edge directs a client to its tenant's cell, learning placements from tenant.config."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from conftest import ADMIN_KEY, Served
from factories import Client, onboard, tenant
from google.protobuf import field_mask_pb2

from lianluo.edge.v1 import edge_pb2 as pb
from lianluo.edge.v1 import edge_pb2_grpc as rpc
from lianluo.runtime.service import Service
from lianluo.tenants.v1 import tenants_pb2 as tpb

pytestmark = pytest.mark.integration


async def test_a_tenant_is_directed_to_its_cell(tenants_service: Served, edge: Service) -> None:
    async with (
        grpc.aio.insecure_channel(tenants_service.address) as tch,
        grpc.aio.insecure_channel(f"127.0.0.1:{edge.grpc.port}") as ech,
    ):
        admin = Client(tch, ADMIN_KEY)
        placed = tenant()
        placed.cell = "cell-2"
        t = await admin.tenants.CreateTenant(
            tpb.CreateTenantRequest(tenant=placed), metadata=admin.md
        )
        key = (
            await admin.keys.CreateApiKey(
                tpb.CreateApiKeyRequest(tenant_id=t.id, scope=tpb.API_KEY_SCOPE_TENANT),
                metadata=admin.md,
            )
        ).secret
        unplaced, other = await onboard(admin)
        stub = rpc.EdgeServiceStub(ech)
        md = (("authorization", f"Bearer {key}"),)
        async with asyncio.timeout(20):
            while True:  # the edge learns the new tenant and key from tenant.config
                try:
                    where = await stub.LocateTenant(
                        pb.LocateTenantRequest(tenant_id=t.id), metadata=md
                    )
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.2)
        assert where.cell == "cell-2"
        assert where.endpoints["media"] == "cell-2-media:50051"
        assert set(where.endpoints) >= {
            "tenants",
            "media",
            "ivr",
            "acd",
            "recording",
            "notification",
        }

        # tenant.config is ordered per tenant, not across tenants: the edge may learn the
        # other tenants (and their keys) a moment after the first.
        waiting = await refusal(stub, unplaced.id, admin.md)
        assert waiting.code() == grpc.StatusCode.FAILED_PRECONDITION
        foreign = await refusal(stub, t.id, other.md)
        assert foreign.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as self_placing:
            await Client(tch, key).tenants.UpdateTenant(
                tpb.UpdateTenantRequest(
                    tenant=tpb.Tenant(id=t.id, cell="cell-9"),
                    update_mask=field_mask_pb2.FieldMask(paths=["cell"]),
                ),
                metadata=md,
            )
        assert self_placing.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def refusal(
    stub: rpc.EdgeServiceStub, tenant_id: str, md: tuple[tuple[str, str], ...]
) -> grpc.aio.AioRpcError:
    """LocateTenant's refusal once the edge knows the tenant and the caller's key."""
    async with asyncio.timeout(20):
        while True:
            try:
                await stub.LocateTenant(pb.LocateTenantRequest(tenant_id=tenant_id), metadata=md)
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED):
                    return error
            else:
                raise AssertionError(f"LocateTenant({tenant_id}) was not refused")
            await asyncio.sleep(0.2)
