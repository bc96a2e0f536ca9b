"""Another service's view of tenant configuration, rebuilt from the real tenant.config topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from conftest import ADMIN_KEY, Served, Stack
from factories import Client, agent, onboard
from google.protobuf import timestamp_pb2

from lianluo.runtime import auth, quotas
from lianluo.runtime.errors import PermissionDenied
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration


async def test_view_rebuilds_configuration_and_authenticates_keys(
    stack: Stack, tenants_service: Served
) -> None:
    async with grpc.aio.insecure_channel(tenants_service.address) as channel:
        admin = Client(channel, ADMIN_KEY)
        t, c = await onboard(admin)
        a = await c.agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=c.md
        )
        view = TenantConfigView(stack.kafka, f"{stack.topic_prefix}tenant.config")
        async with asyncio.timeout(20):
            await view.start()
            follow = asyncio.create_task(view.run())
            # What was written before start() is there, or arrives moments later via the relay.
            await view.wait_until(lambda: view.get(t.id, "agent", a.id) is not None)
        assert view.by_name(t.id, "agent", a.name).id == a.id
        key_id, secret = auth.parse_token(c.key)
        principal = await view.resolve(key_id, auth.sha256_hex(secret))
        assert principal == auth.Principal(
            key_id=key_id, tenant_id=t.id, limits=quotas.PLAN_LIMITS[t.plan]
        )
        assert await view.resolve(key_id, auth.sha256_hex("wrong")) is None

        await c.agents.DeleteAgent(
            pb.DeleteAgentRequest(tenant_id=t.id, agent_id=a.id), metadata=c.md
        )
        await admin.tenants.SuspendTenant(
            pb.SuspendTenantRequest(tenant_id=t.id), metadata=admin.md
        )
        async with asyncio.timeout(20):
            await view.wait_until(
                lambda: (
                    view.get(t.id, "agent", a.id) is None
                    and view.tenant(t.id).state == pb.TENANT_STATE_SUSPENDED
                )  # type: ignore[union-attr]
            )
        with pytest.raises(PermissionDenied):
            await view.resolve(key_id, auth.sha256_hex(secret))
        await admin.tenants.DeleteTenant(pb.DeleteTenantRequest(tenant_id=t.id), metadata=admin.md)
        async with asyncio.timeout(20):
            await view.wait_until(lambda: view.tenant(t.id) is None)
        assert await view.resolve(key_id, auth.sha256_hex(secret)) is None
        view.stop()
        await follow


async def test_every_other_service_refuses_a_key_after_its_expiry_and_knows_its_permissions(
    stack: Stack, tenants_service: Served
) -> None:
    """The expiry travels on tenant.config with the key, so a service's view refuses the key
    at that time by itself: no call to the tenants service, and no change event needed."""
    async with grpc.aio.insecure_channel(tenants_service.address) as channel:
        admin = Client(channel, ADMIN_KEY)
        t, c = await onboard(admin)
        expire = timestamp_pb2.Timestamp()
        expire.FromDatetime(datetime.now(UTC) + timedelta(seconds=12))
        created = await c.keys.CreateApiKey(
            pb.CreateApiKeyRequest(
                tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, expire_time=expire
            ),
            metadata=c.md,
        )
        key_id, secret = auth.parse_token(created.secret)
        widget = await c.keys.CreateApiKey(
            pb.CreateApiKeyRequest(
                tenant_id=t.id,
                scope=pb.API_KEY_SCOPE_TENANT,
                permissions=["interaction:read", "interaction:write"],
            ),
            metadata=c.md,
        )
        view = TenantConfigView(stack.kafka, f"{stack.topic_prefix}tenant.config")
        await view.start()
        follow = asyncio.create_task(view.run())
        try:
            widget_id, widget_secret = auth.parse_token(widget.secret)
            async with asyncio.timeout(20):
                await view.wait_until(lambda: view.tenant(t.id) is not None)
                # Both keys arrive through the relay, moments after they were created.
                while await view.resolve(key_id, auth.sha256_hex(secret)) is None or (
                    await view.resolve(widget_id, auth.sha256_hex(widget_secret)) is None
                ):
                    await asyncio.sleep(0.05)
            assert datetime.now(UTC) < expire.ToDatetime(UTC), "seen before its expiry"
            # A narrowed key keeps its permissions in every service's copy.
            narrowed = await view.resolve(widget_id, auth.sha256_hex(widget_secret))
            assert narrowed is not None
            assert narrowed.may("interaction:write")
            assert not narrowed.may("recording:read")
            await asyncio.sleep(
                max(0.0, (expire.ToDatetime(UTC) - datetime.now(UTC)).total_seconds()) + 0.2
            )
            assert await view.resolve(key_id, auth.sha256_hex(secret)) is None
        finally:
            view.stop()
            await follow
