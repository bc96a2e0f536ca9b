"""Calls to the global plane's tenants gRPC API: provision and deprovision one tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from lianluo.common.v1 import common_pb2 as common
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
    """An admin client of the tenants service."""

    address: str
    admin_key: str
    timeout: float = 10.0
    channel: grpc.aio.Channel | None = None

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_key}"),)

    def _channel(self) -> grpc.aio.Channel:
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(self.address)
        return self.channel

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def provision(
        self, name: str, spec: dict[str, Any], request_id: str, cell: str
    ) -> pb.Tenant:
        """Create the tenant in its cell; the same request_id returns the first result."""
        stub = rpc.TenantServiceStub(self._channel())
        message = tenant_message(name, spec)
        # The tenants service records the placement, so the edge can direct clients by it.
        message.cell = cell
        request = pb.CreateTenantRequest(tenant=message, request_id=request_id)
        tenant: pb.Tenant = await stub.CreateTenant(
            request, metadata=self._metadata(), timeout=self.timeout
        )
        if spec.get("initialAdmin"):
            agents = rpc.AgentServiceStub(self._channel())
            await agents.CreateAgent(
                pb.CreateAgentRequest(
                    tenant_id=tenant.id,
                    agent=admin_agent(spec["initialAdmin"]),
                    request_id=f"{request_id}-admin",
                ),
                metadata=self._metadata(),
                timeout=self.timeout,
            )
        return tenant

    async def update(self, tenant_id: str, name: str, spec: dict[str, Any]) -> pb.Tenant:
        """Bring the tenant's display name, plan, expected sessions and channels up to date."""
        stub = rpc.TenantServiceStub(self._channel())
        message = tenant_message(name, spec)
        message.id = tenant_id
        mask = field_mask_pb2.FieldMask(paths=list(_UPDATABLE))
        tenant: pb.Tenant = await stub.UpdateTenant(
            pb.UpdateTenantRequest(tenant=message, update_mask=mask),
            metadata=self._metadata(),
            timeout=self.timeout,
        )
        return tenant

    async def deprovision(self, tenant_id: str) -> None:
        """Delete the tenant and everything it owns; one already gone counts as done."""
        stub = rpc.TenantServiceStub(self._channel())
        try:
            await stub.DeleteTenant(
                pb.DeleteTenantRequest(tenant_id=tenant_id),
                metadata=self._metadata(),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
