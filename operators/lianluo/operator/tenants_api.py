"""Calls to the global plane's tenants gRPC API: provision and deprovision one tenant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from lianluo.common.v1 import common_pb2 as common
from lianluo.runtime.grpc_server import platform_channel
from lianluo.runtime.settings import GrpcTlsSettings
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

PLANS = {"starter": pb.PLAN_STARTER, "business": pb.PLAN_BUSINESS, "enterprise": pb.PLAN_ENTERPRISE}
CHANNELS = {
    "phone": common.CHANNEL_PHONE,
    "app": common.CHANNEL_APP,
    "web": common.CHANNEL_WEB,
    "h5": common.CHANNEL_H5,
    "wechat": common.CHANNEL_WECHAT,
    "email": common.CHANNEL_EMAIL,
    "sms": common.CHANNEL_SMS,
}
_UPDATABLE = ("display_name", "plan", "expected_concurrent_sessions", "channels")
# Codes a retry can cure; every other error is the request's own fault.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def tenant_message(name: str, spec: dict[str, Any]) -> pb.Tenant:
    """The tenants API's Tenant for a Tenant resource's name and spec."""
    return pb.Tenant(
        name=name,
        display_name=spec["displayName"],
        plan=PLANS[spec["plan"]],
        expected_concurrent_sessions=int(spec["expectedConcurrentSessions"]),
        channels=[CHANNELS[c] for c in spec.get("channels", [])],
    )


def admin_agent(admin: dict[str, Any]) -> pb.Agent:
    return pb.Agent(
        name=admin["name"],
        display_name=admin.get("displayName") or admin["name"],
        kind=pb.AGENT_KIND_STAFF,
        groups=["admins"],
        capacity=[
            pb.MediaCapacity(media=common.MEDIA_TYPE_CHAT, max_concurrent=3),
            pb.MediaCapacity(media=common.MEDIA_TYPE_VOICE, max_concurrent=1),
        ],
    )


@dataclass
class TenantsApi:
    """An admin client of the tenants services: the global registry, and each cell's own.

    The global plane keeps the registry and the cell map (tenant -> cell) that the edge answers
    from; the cell's tenants service keeps the tenant's configuration, which the cell's other
    services follow on the cell's own `tenant.config`. One tenant has one id in both.
    """

    address: str
    admin_key: str
    timeout: float = 10.0
    # Where a cell's tenants service answers ("{cell}" is replaced); empty: the global one.
    cell_address: str = ""
    # Cells whose tenants service answers elsewhere than `cell_address` says.
    cell_addresses: dict[str, str] = field(default_factory=dict)
    # How to dial them: TLS when the platform's gRPC is (LIANLUO_GRPC_TLS_*).
    tls: GrpcTlsSettings = field(default_factory=GrpcTlsSettings)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_key}"),)

    def stub(self, address: str) -> rpc.TenantServiceStub:
        """The TenantService at `address`, over the channel kept for it."""
        return rpc.TenantServiceStub(self._channel(address))

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self.channels:
            self.channels[address] = platform_channel(address, self.tls)
        return self.channels[address]

    def cell_tenants(self, cell: str) -> str:
        """Where the cell's own tenants service answers."""
        if cell in self.cell_addresses:
            return self.cell_addresses[cell]
        return self.cell_address.format(cell=cell) if self.cell_address and cell else self.address

    def _places(self, cell: str) -> list[str]:
        """The global registry first, then the cell's own service when it is another one."""
        own = self.cell_tenants(cell)
        return [self.address] if own == self.address else [self.address, own]

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    async def provision(
        self, name: str, spec: dict[str, Any], request_id: str, cell: str
    ) -> pb.Tenant:
        """Create the tenant in the registry and in its cell; a repeat returns the first result."""
        message = tenant_message(name, spec)
        message.cell = cell
        registry, *own = self._places(cell)
        tenant: pb.Tenant = await rpc.TenantServiceStub(self._channel(registry)).CreateTenant(
            pb.CreateTenantRequest(tenant=message, request_id=request_id),
            metadata=self._metadata(),
            timeout=self.timeout,
        )
        try:
            for address in own:
                await rpc.TenantServiceStub(self._channel(address)).CreateTenant(
                    pb.CreateTenantRequest(
                        tenant=message, request_id=request_id, tenant_id=tenant.id
                    ),
                    metadata=self._metadata(),
                    timeout=self.timeout,
                )
            if spec.get("initialAdmin"):
                # The tenant's people live with its configuration: in the cell.
                agents = rpc.AgentServiceStub(self._channel(self._places(cell)[-1]))
                await agents.CreateAgent(
                    pb.CreateAgentRequest(
                        tenant_id=tenant.id,
                        agent=admin_agent(spec["initialAdmin"]),
                        request_id=f"{request_id}-admin",
                    ),
                    metadata=self._metadata(),
                    timeout=self.timeout,
                )
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE:
                # Refused half-way: no half-made tenant stays live in either place. (A retry
                # with the same request_id would find and finish it, so a retryable error
                # leaves it.)
                await self.deprovision(tenant.id, cell)
            raise
        return tenant

    async def update(
        self, tenant_id: str, name: str, spec: dict[str, Any], cell: str = ""
    ) -> pb.Tenant:
        """Bring the tenant's display name, plan, expected sessions and channels up to date."""
        message = tenant_message(name, spec)
        message.id = tenant_id
        mask = field_mask_pb2.FieldMask(paths=list(_UPDATABLE))
        updated: list[pb.Tenant] = []
        for address in self._places(cell):
            updated.append(
                await rpc.TenantServiceStub(self._channel(address)).UpdateTenant(
                    pb.UpdateTenantRequest(tenant=message, update_mask=mask),
                    metadata=self._metadata(),
                    timeout=self.timeout,
                )
            )
        return updated[0]

    async def deprovision(self, tenant_id: str, cell: str = "") -> None:
        """Delete the tenant from its cell, then from the registry; one already gone is done."""
        for address in reversed(self._places(cell)):
            try:
                await rpc.TenantServiceStub(self._channel(address)).DeleteTenant(
                    pb.DeleteTenantRequest(tenant_id=tenant_id),
                    metadata=self._metadata(),
                    timeout=self.timeout,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
