"""The tenants API as an integrator sees it, over gRPC against the real Postgres and broker."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from factories import Client, agent, flow, onboard, queue, rule, template, tenant, unique
from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc_errors import bad_fields, fails

from lianluo.common.v1 import common_pb2 as common
from lianluo.events.v1 import envelope_pb2, tenant_config_pb2
from lianluo.runtime import auth
from lianluo.runtime.kafka import partition_for
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration

from conftest import ADMIN_KEY


@pytest.fixture
def admin(channel: grpc.aio.Channel) -> Client:
    return Client(channel, ADMIN_KEY)


async def test_tenant_lifecycle(admin: Client) -> None:
    t, as_tenant = await onboard(admin)
    assert t.state == pb.TENANT_STATE_ACTIVE and t.revision == 1
    got = await as_tenant.tenants.GetTenant(
        pb.GetTenantRequest(tenant_id=t.id), metadata=as_tenant.md
    )
    assert got == t

    patch = pb.Tenant(id=t.id, display_name="Acme Ltd")
    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    updated = await as_tenant.tenants.UpdateTenant(
        pb.UpdateTenantRequest(tenant=patch, update_mask=mask), metadata=as_tenant.md
    )
    assert (updated.display_name, updated.revision, updated.plan) == ("Acme Ltd", 2, t.plan)
    stale = pb.UpdateTenantRequest(tenant=patch, update_mask=mask, expected_revision=1)
    await fails(
        as_tenant.tenants.UpdateTenant(stale, metadata=as_tenant.md), grpc.StatusCode.ABORTED
    )
    plan = pb.UpdateTenantRequest(
        tenant=pb.Tenant(id=t.id, plan=pb.PLAN_ENTERPRISE),
        update_mask=field_mask_pb2.FieldMask(paths=["plan"]),
    )
    await fails(
        as_tenant.tenants.UpdateTenant(plan, metadata=as_tenant.md),
        grpc.StatusCode.PERMISSION_DENIED,
    )

    await admin.tenants.SuspendTenant(
        pb.SuspendTenantRequest(tenant_id=t.id, reason="unpaid"), metadata=admin.md
    )
    error = await fails(
        as_tenant.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=as_tenant.md),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "suspended" in (error.details() or "")
    await admin.tenants.ResumeTenant(pb.ResumeTenantRequest(tenant_id=t.id), metadata=admin.md)
    await as_tenant.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=as_tenant.md)

    await admin.tenants.DeleteTenant(pb.DeleteTenantRequest(tenant_id=t.id), metadata=admin.md)
    await fails(
        as_tenant.tenants.GetTenant(pb.GetTenantRequest(tenant_id=t.id), metadata=as_tenant.md),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await fails(
        admin.tenants.GetTenant(pb.GetTenantRequest(tenant_id=t.id), metadata=admin.md),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_create_tenant_rejects_bad_input_naming_every_field(admin: Client) -> None:
    bad = pb.Tenant(name="X", expected_concurrent_sessions=0, channels=[common.CHANNEL_UNSPECIFIED])
    error = await fails(
        admin.tenants.CreateTenant(pb.CreateTenantRequest(tenant=bad), metadata=admin.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {
        "tenant.name",
        "tenant.plan",
        "tenant.expected_concurrent_sessions",
        "tenant.channels[0]",
    }


async def test_tenant_names_are_unique_and_request_ids_make_creates_idempotent(
    admin: Client,
) -> None:
    t = tenant()
    request_id = unique("req")
    first = await admin.tenants.CreateTenant(
        pb.CreateTenantRequest(tenant=t, request_id=request_id), metadata=admin.md
    )
    again = await admin.tenants.CreateTenant(
        pb.CreateTenantRequest(tenant=t, request_id=request_id), metadata=admin.md
    )
    assert again.id == first.id
    await fails(
        admin.tenants.CreateTenant(pb.CreateTenantRequest(tenant=t), metadata=admin.md),
        grpc.StatusCode.ALREADY_EXISTS,
    )


async def test_agents_page_through_every_agent_once(admin: Client) -> None:
    t, c = await onboard(admin)
    names = {f"agent{i}@acme.test" for i in range(7)}
    for name in names:
        await c.agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=t.id, agent=agent(name)), metadata=c.md
        )
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await c.agents.ListAgents(
            pb.ListAgentsRequest(
                tenant_id=t.id, page=common.PageRequest(page_size=3, page_token=token)
            ),
            metadata=c.md,
        )
        seen += [a.name for a in page.agents]
        token = page.page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(names)
    error = await fails(
        c.agents.ListAgents(
            pb.ListAgentsRequest(tenant_id=t.id, page=common.PageRequest(page_token="bogus")),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"page.page_token"}


async def test_agent_validation_and_update_mask(admin: Client) -> None:
    t, c = await onboard(admin)
    bad = agent()
    bad.skills.add(skill="cards", level=11)
    bad.capacity.add(media=common.MEDIA_TYPE_CHAT, max_concurrent=0)
    error = await fails(
        c.agents.CreateAgent(pb.CreateAgentRequest(tenant_id=t.id, agent=bad), metadata=c.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {
        "agent.skills[1].skill",
        "agent.skills[1].level",
        "agent.capacity[2].media",
        "agent.capacity[2].max_concurrent",
    }
    a = await c.agents.CreateAgent(
        pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=c.md
    )
    await fails(
        c.agents.CreateAgent(pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=c.md),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    patch = pb.Agent(id=a.id, skills=[common.SkillLevel(skill="loans", level=9)])
    updated = await c.agents.UpdateAgent(
        pb.UpdateAgentRequest(
            tenant_id=t.id, agent=patch, update_mask=field_mask_pb2.FieldMask(paths=["skills"])
        ),
        metadata=c.md,
    )
    assert [(s.skill, s.level) for s in updated.skills] == [("loans", 9)]
    assert updated.languages == a.languages and updated.revision == 2
    error = await fails(
        c.agents.UpdateAgent(
            pb.UpdateAgentRequest(
                tenant_id=t.id, agent=patch, update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"update_mask.paths[0]"}


async def test_queue_and_flow_references_are_checked(admin: Client) -> None:
    t, c = await onboard(admin)
    orphan = queue("vip", overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_QUEUE, target_queue="nowhere"))
    error = await fails(
        c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=orphan), metadata=c.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"queue.overflow.target_queue"}
    error = await fails(
        c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=flow()), metadata=c.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"flow.nodes[2].route_to_queue.queue"}

    cards = await c.queues.CreateQueue(
        pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md
    )
    await c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=flow()), metadata=c.md)
    error = await fails(
        c.queues.DeleteQueue(
            pb.DeleteQueueRequest(tenant_id=t.id, queue_id=cards.id), metadata=c.md
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "flow/main" in (error.details() or "")


async def test_flows_are_validated_and_versioned(admin: Client) -> None:
    t, c = await onboard(admin)
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    v1 = await c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=flow()), metadata=c.md)
    same = await c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=flow()), metadata=c.md)
    assert (v1.version, same.version, same.id) == (1, 1, v1.id)
    changed = flow()
    changed.nodes[0].prompt.text = "Welcome back"
    v2 = await c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=changed), metadata=c.md)
    assert (v2.version, v2.id) == (2, v1.id)
    old = await c.flows.GetFlow(
        pb.GetFlowRequest(tenant_id=t.id, flow_id=v1.id, version=1), metadata=c.md
    )
    latest = await c.flows.GetFlow(pb.GetFlowRequest(tenant_id=t.id, flow_id=v1.id), metadata=c.md)
    assert old.nodes[0].prompt.text == "Hello" and latest.nodes[0].prompt.text == "Welcome back"

    broken = flow()
    broken.nodes[1].menu.choices[0].next = "missing"
    broken.nodes.add(id="island", end=pb.EndNode(text="never reached"))
    error = await fails(
        c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=broken), metadata=c.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert {"flow.nodes[1].menu.choices[0].next", "flow.nodes[2]", "flow.nodes[4]"} <= bad_fields(
        error
    )
    latest = await c.flows.GetFlow(pb.GetFlowRequest(tenant_id=t.id, flow_id=v1.id), metadata=c.md)
    assert latest.version == 2, "a rejected flow must not be stored"


async def test_a_flow_can_be_deleted_and_is_gone_afterwards(admin: Client) -> None:
    t, c = await onboard(admin)
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    v1 = await c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=flow()), metadata=c.md)
    changed = flow()
    changed.nodes[0].prompt.text = "Welcome back"
    await c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=changed), metadata=c.md)
    await c.flows.DeleteFlow(pb.DeleteFlowRequest(tenant_id=t.id, flow_id=v1.id), metadata=c.md)
    await fails(
        c.flows.GetFlow(pb.GetFlowRequest(tenant_id=t.id, flow_id=v1.id), metadata=c.md),
        grpc.StatusCode.NOT_FOUND,
    )
    again = await c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=flow()), metadata=c.md)
    assert again.id != v1.id and again.version == 1


async def test_hostile_values_get_invalid_argument_naming_the_field(admin: Client) -> None:
    t, c = await onboard(admin)
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    huge_end = flow()
    huge_end.nodes.add(id="huge", end=pb.EndNode(text="x" * (2 << 20)))
    cases = {
        "flow.nodes[4].end.text": c.flows.PutFlow(
            pb.PutFlowRequest(tenant_id=t.id, flow=huge_end), metadata=c.md
        ),
        "queue.name": c.queues.CreateQueue(
            pb.CreateQueueRequest(tenant_id=t.id, queue=queue("a\x00b")), metadata=c.md
        ),
        "request_id": admin.tenants.CreateTenant(
            pb.CreateTenantRequest(tenant=tenant(), request_id="r" * 3_000), metadata=admin.md
        ),
    }
    for field, call in cases.items():
        error = await fails(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert bad_fields(error) == {field}
        # The reply names the problem without repeating the input.
        assert len(error.details() or "") < 1_000
    pattern = flow()
    pattern.nodes[1].menu.choices[0].next = "ask"
    pattern.nodes.add(
        id="ask",
        collect=pb.CollectNode(prompt="Card?", variable="card", pattern="(?<=a)b", next="bye"),
    )
    error = await fails(
        c.flows.PutFlow(pb.PutFlowRequest(tenant_id=t.id, flow=pattern), metadata=c.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "flow.nodes[4].collect.pattern" in bad_fields(error)


async def test_a_body_that_does_not_decode_gets_invalid_argument(
    channel: grpc.aio.Channel, admin: Client
) -> None:
    raw = channel.unary_unary("/lianluo.tenants.v1.TenantService/GetTenant")
    error = await fails(raw(b"\xff\xff\xff", metadata=admin.md), grpc.StatusCode.INVALID_ARGUMENT)
    assert "protobuf" not in (error.details() or "").lower()


async def test_rules_hide_their_signing_secret_and_pin_their_template(admin: Client) -> None:
    t, c = await onboard(admin)
    error = await fails(
        c.notifications.CreateRule(
            pb.CreateRuleRequest(tenant_id=t.id, rule=rule()), metadata=c.md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"rule.template"}
    tpl = await c.notifications.CreateTemplate(
        pb.CreateTemplateRequest(tenant_id=t.id, template=template()), metadata=c.md
    )
    r = await c.notifications.CreateRule(
        pb.CreateRuleRequest(tenant_id=t.id, rule=rule()), metadata=c.md
    )
    assert r.webhook.url and not r.webhook.signing_secret
    got = await c.notifications.GetRule(
        pb.GetRuleRequest(tenant_id=t.id, rule_id=r.id), metadata=c.md
    )
    assert not got.webhook.signing_secret
    await fails(
        c.notifications.DeleteTemplate(
            pb.DeleteTemplateRequest(tenant_id=t.id, template_id=tpl.id), metadata=c.md
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_keys_are_shown_once_stored_hashed_and_revocable(
    admin: Client, stack: object
) -> None:
    t, c = await onboard(admin)
    created = await c.keys.CreateApiKey(
        pb.CreateApiKeyRequest(tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, display_name="ci"),
        metadata=c.md,
    )
    listed = await c.keys.ListApiKeys(pb.ListApiKeysRequest(tenant_id=t.id), metadata=c.md)
    assert created.api_key.id in {k.id for k in listed.api_keys}
    assert created.secret not in str(listed)
    conn = await asyncpg.connect(stack.database_url)  # type: ignore[attr-defined]
    try:
        rows = await conn.fetch("select * from tenants.api_keys where tenant_id = $1::uuid", t.id)
    finally:
        await conn.close()
    secret_part = created.secret.split("_", 2)[2]
    assert rows and all(secret_part not in str(dict(r)) for r in rows)

    fresh = Client(c.channel, created.secret)
    await fresh.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=fresh.md)
    await c.keys.RevokeApiKey(
        pb.RevokeApiKeyRequest(tenant_id=t.id, api_key_id=created.api_key.id), metadata=c.md
    )
    await fails(
        fresh.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=fresh.md),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await fails(
        c.keys.CreateApiKey(pb.CreateApiKeyRequest(scope=pb.API_KEY_SCOPE_ADMIN), metadata=c.md),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_a_key_with_an_expiry_stops_working_at_it(admin: Client) -> None:
    t, c = await onboard(admin)
    for when, why in ((-60, "in the past"), (11 * 366 * 86400, "over ten years ahead")):
        expire = timestamp_pb2.Timestamp()
        expire.FromDatetime(datetime.now(UTC) + timedelta(seconds=when))
        refused = await fails(
            c.keys.CreateApiKey(
                pb.CreateApiKeyRequest(
                    tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, expire_time=expire
                ),
                metadata=c.md,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad_fields(refused) == {"expire_time"}, why

    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(seconds=8))
    created = await c.keys.CreateApiKey(
        pb.CreateApiKeyRequest(tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, expire_time=expire),
        metadata=c.md,
    )
    assert created.api_key.expire_time == expire
    listed = await c.keys.ListApiKeys(pb.ListApiKeysRequest(tenant_id=t.id), metadata=c.md)
    assert {k.id: k.expire_time for k in listed.api_keys}[created.api_key.id] == expire
    short = Client(c.channel, created.secret)
    await short.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=short.md)
    await asyncio.sleep(max(0.0, expire.ToDatetime(UTC).timestamp() - time.time()) + 0.2)
    await fails(
        short.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=short.md),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_every_change_is_in_the_audit_log_with_who_what_when_and_where(
    admin: Client,
) -> None:
    t, c = await onboard(admin)
    other, _ = await onboard(admin)
    second = await c.keys.CreateApiKey(
        pb.CreateApiKeyRequest(tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT), metadata=c.md
    )
    by_second = Client(c.channel, second.secret)
    made = await by_second.agents.CreateAgent(
        pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=by_second.md
    )
    await c.agents.DeleteAgent(
        pb.DeleteAgentRequest(tenant_id=t.id, agent_id=made.id), metadata=c.md
    )

    entries: list[pb.AuditEntry] = []
    token = ""
    while True:  # one entry a page: the export walks every page
        page = await c.audit.ListAuditEntries(
            pb.ListAuditEntriesRequest(
                tenant_id=t.id, page=common.PageRequest(page_size=1, page_token=token)
            ),
            metadata=c.md,
        )
        entries += page.entries
        token = page.page.next_page_token
        if not token:
            break
    assert [int(e.id) for e in entries] == sorted(int(e.id) for e in entries)
    agent_entries = [
        (e.api_key_id, e.method.rsplit("/", 1)[-1], e.deleted) for e in entries if e.kind == "agent"
    ]
    assert agent_entries == [
        (second.api_key.id, "CreateAgent", False),
        (auth.parse_token(c.key)[0], "DeleteAgent", True),
    ]
    assert all(
        e.peer.startswith("ipv") and e.HasField("time") for e in entries if e.kind == "agent"
    )
    assert {e.kind for e in entries} >= {"api_key", "agent"}
    assert all(e.tenant_id == t.id for e in entries)
    others = await admin.audit.ListAuditEntries(
        pb.ListAuditEntriesRequest(tenant_id=other.id), metadata=admin.md
    )
    assert made.id not in {e.resource_id for e in others.entries}

    narrowed = await c.keys.CreateApiKey(
        pb.CreateApiKeyRequest(
            tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, permissions=["config:read"]
        ),
        metadata=c.md,
    )
    reader = Client(c.channel, narrowed.secret)
    await fails(
        reader.audit.ListAuditEntries(
            pb.ListAuditEntriesRequest(tenant_id=t.id), metadata=reader.md
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_a_narrowed_key_does_only_what_it_was_given_and_gives_no_more(
    admin: Client,
) -> None:
    t, c = await onboard(admin)

    async def key(*permissions: str, by: Client = c) -> Client:
        created = await by.keys.CreateApiKey(
            pb.CreateApiKeyRequest(
                tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, permissions=permissions
            ),
            metadata=by.md,
        )
        assert list(created.api_key.permissions) == sorted(permissions)
        return Client(c.channel, created.secret)

    reader = await key("config:read")
    await reader.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=reader.md)
    denied = await fails(
        reader.agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=reader.md
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "config:write" in (denied.details() or "")
    await fails(
        reader.keys.ListApiKeys(pb.ListApiKeysRequest(tenant_id=t.id), metadata=reader.md),
        grpc.StatusCode.PERMISSION_DENIED,
    )

    manager = await key("keys:write", "config:read")
    for asked in ((), ("recording:read",), ("keys:write", "config:write")):
        await fails(
            manager.keys.CreateApiKey(
                pb.CreateApiKeyRequest(
                    tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, permissions=asked
                ),
                metadata=manager.md,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    await key("config:read", by=manager)  # no more than it has itself
    full = await c.keys.CreateApiKey(
        pb.CreateApiKeyRequest(tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT), metadata=c.md
    )
    await fails(  # rotating would hand it the secret of a stronger key
        manager.keys.RotateApiKey(
            pb.RotateApiKeyRequest(tenant_id=t.id, api_key_id=full.api_key.id),
            metadata=manager.md,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )

    for asked, field in (
        (("nonsense",), "permissions[0]"),
        (("platform:admin",), "permissions[0]"),
    ):
        refused = await fails(
            c.keys.CreateApiKey(
                pb.CreateApiKeyRequest(
                    tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, permissions=asked
                ),
                metadata=c.md,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad_fields(refused) == {field}


async def test_a_rotated_key_overlaps_the_new_one_then_stops(admin: Client) -> None:
    t, c = await onboard(admin)
    old = await c.keys.CreateApiKey(
        pb.CreateApiKeyRequest(tenant_id=t.id, scope=pb.API_KEY_SCOPE_TENANT, display_name="ci"),
        metadata=c.md,
    )
    refused = await fails(
        c.keys.RotateApiKey(
            pb.RotateApiKeyRequest(
                tenant_id=t.id, api_key_id=old.api_key.id, overlap_seconds=31 * 86400
            ),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(refused) == {"overlap_seconds"}
    rotated = await c.keys.RotateApiKey(
        pb.RotateApiKeyRequest(tenant_id=t.id, api_key_id=old.api_key.id, overlap_seconds=8),
        metadata=c.md,
    )
    assert (rotated.api_key.scope, rotated.api_key.display_name) == (
        pb.API_KEY_SCOPE_TENANT,
        "ci",
    )
    assert rotated.previous.id == old.api_key.id
    assert rotated.previous.HasField("expire_time")
    before, after = Client(c.channel, old.secret), Client(c.channel, rotated.secret)
    for client in (before, after):  # both work during the overlap
        await client.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=client.md)
    ends = rotated.previous.expire_time.ToDatetime(UTC).timestamp()
    await asyncio.sleep(max(0.0, ends - time.time()) + 0.2)
    await fails(
        before.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=before.md),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await after.agents.ListAgents(pb.ListAgentsRequest(tenant_id=t.id), metadata=after.md)
    # An ended key cannot be rotated again.
    await fails(
        c.keys.RotateApiKey(
            pb.RotateApiKeyRequest(tenant_id=t.id, api_key_id=old.api_key.id), metadata=c.md
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer nonsense"),),
        (("authorization", "Basic abc"),),
        (("authorization", "Bearer llk_0000_wrong"),),
    ],
)
async def test_calls_without_a_valid_key_are_unauthenticated(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    c = Client(channel, "")
    await fails(
        c.tenants.ListTenants(pb.ListTenantsRequest(), metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_every_change_is_published_on_tenant_config_in_tenant_order(
    admin: Client, stack: object
) -> None:
    t, c = await onboard(admin)
    a = await c.agents.CreateAgent(
        pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=c.md
    )
    await c.agents.DeleteAgent(pb.DeleteAgentRequest(tenant_id=t.id, agent_id=a.id), metadata=c.md)
    topic = f"{stack.topic_prefix}tenant.config"  # type: ignore[attr-defined]
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka,
        auto_offset_reset="earliest",
        group_id=None,  # type: ignore[attr-defined]
    )
    await consumer.start()
    changes: list[tuple[str, tenant_config_pb2.TenantConfigChanged, int]] = []
    try:
        async with asyncio.timeout(20):
            while len(changes) < 5:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        env = envelope_pb2.Envelope.FromString(record.value)
                        if env.tenant_id != t.id:
                            continue
                        change = tenant_config_pb2.TenantConfigChanged()
                        env.payload.Unpack(change)
                        changes.append((record.key.decode(), change, record.partition))
    finally:
        await consumer.stop()
    kinds = [(ch.kind, ch.deleted) for _, ch, _ in changes]
    assert kinds == [
        ("tenant", False),
        ("signing_key", False),
        ("api_key", False),
        ("agent", False),
        ("agent", True),
    ]
    assert changes[3][0] == f"{t.id}/agent/{a.id}" and changes[3][1].agent.name == a.name
    assert changes[2][1].api_key.secret_sha256 and changes[2][1].api_key.api_key.tenant_id != ""
    # Only the public half of the tenant's signing key leaves the tenants service.
    public = json.loads(changes[1][1].signing_key.jwk)
    assert public["kty"] == "OKP" and public["kid"] == changes[1][1].signing_key.kid
    assert "d" not in public
    partitions = {p for _, _, p in changes}
    assert partitions == {partition_for(t.id.encode(), 8)}
