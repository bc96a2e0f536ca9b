"""A key of one tenant never reads or changes anything of another tenant, through any RPC.

Every RPC of the tenants service is called with tenant B's key against tenant A: naming A's
tenant id is refused (PERMISSION_DENIED); naming A's resource ids under B answers NOT_FOUND,
exactly as for an id that does not exist. A completeness check fails when an RPC is added
without a case here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from conftest import ADMIN_KEY
from factories import (
    Client,
    agent,
    flow,
    onboard,
    queue,
    rule,
    template,
    tenant,
    user,
    web_channel,
)
from google.protobuf import field_mask_pb2

from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration
DENIED = grpc.StatusCode.PERMISSION_DENIED
MISSING = grpc.StatusCode.NOT_FOUND
UNKNOWN_CREDENTIAL = grpc.StatusCode.UNAUTHENTICATED
# The call answers: what it gives is public (the case checks it holds nothing private).
PUBLIC = grpc.StatusCode.OK
PASSWORD = "correct horse battery staple"


@dataclass
class World:
    a: pb.Tenant
    b: pb.Tenant
    ids: dict[str, str]


Case = tuple[str, Callable[[Client, World], Awaitable[Any]], grpc.StatusCode]


async def _public_keys_only(c: Client, tenant_id: str) -> None:
    keys = json.loads((await c.auth.GetJwks(pb.GetJwksRequest(tenant_id=tenant_id))).json)["keys"]
    assert keys and all(k["kty"] == "OKP" and "d" not in k for k in keys)


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def _crud_cases(
    noun: str, plural: str, stub: str, id_field: str, make: Callable[[], Any]
) -> list[Case]:
    """The five standard methods of one kind, against A's tenant and against A's resource."""
    field = {"Template": "template", "Rule": "rule"}.get(noun, noun.lower())

    def req(name: str, **kw: Any) -> Any:
        return getattr(pb, f"{name}Request")(**kw)

    def call(
        method: str, request: Callable[[World], Any]
    ) -> Callable[[Client, World], Awaitable[Any]]:
        return lambda c, w: getattr(getattr(c, stub), method)(request(w), metadata=c.md)

    def patched(w: World, tenant_id: str) -> Any:
        resource = make()
        resource.id = w.ids[noun]
        return req(
            f"Update{noun}",
            tenant_id=tenant_id,
            update_mask=_mask("display_name") if noun in {"Agent", "Queue"} else _mask(),
            **{field: resource},
        )

    return [
        (
            f"Create{noun}",
            call(
                f"Create{noun}", lambda w: req(f"Create{noun}", tenant_id=w.a.id, **{field: make()})
            ),
            DENIED,
        ),
        (
            f"Get{noun}",
            call(
                f"Get{noun}",
                lambda w: req(f"Get{noun}", tenant_id=w.a.id, **{id_field: w.ids[noun]}),
            ),
            DENIED,
        ),
        (
            f"Get{noun}",
            call(
                f"Get{noun}",
                lambda w: req(f"Get{noun}", tenant_id=w.b.id, **{id_field: w.ids[noun]}),
            ),
            MISSING,
        ),
        (
            f"List{plural}",
            call(f"List{plural}", lambda w: req(f"List{plural}", tenant_id=w.a.id)),
            DENIED,
        ),
        (f"Update{noun}", call(f"Update{noun}", lambda w: patched(w, w.a.id)), DENIED),
        (f"Update{noun}", call(f"Update{noun}", lambda w: patched(w, w.b.id)), MISSING),
        (
            f"Delete{noun}",
            call(
                f"Delete{noun}",
                lambda w: req(f"Delete{noun}", tenant_id=w.a.id, **{id_field: w.ids[noun]}),
            ),
            DENIED,
        ),
        (
            f"Delete{noun}",
            call(
                f"Delete{noun}",
                lambda w: req(f"Delete{noun}", tenant_id=w.b.id, **{id_field: w.ids[noun]}),
            ),
            MISSING,
        ),
    ]


CASES: list[Case] = [
    (
        "CreateTenant",
        lambda c, w: c.tenants.CreateTenant(pb.CreateTenantRequest(tenant=tenant()), metadata=c.md),
        DENIED,
    ),
    (
        "GetTenant",
        lambda c, w: c.tenants.GetTenant(pb.GetTenantRequest(tenant_id=w.a.id), metadata=c.md),
        DENIED,
    ),
    (
        "ListTenants",
        lambda c, w: c.tenants.ListTenants(pb.ListTenantsRequest(), metadata=c.md),
        DENIED,
    ),
    (
        "UpdateTenant",
        lambda c, w: c.tenants.UpdateTenant(
            pb.UpdateTenantRequest(
                tenant=pb.Tenant(id=w.a.id, display_name="x"), update_mask=_mask("display_name")
            ),
            metadata=c.md,
        ),
        DENIED,
    ),
    (
        "SuspendTenant",
        lambda c, w: c.tenants.SuspendTenant(
            pb.SuspendTenantRequest(tenant_id=w.a.id), metadata=c.md
        ),
        DENIED,
    ),
    (
        "ResumeTenant",
        lambda c, w: c.tenants.ResumeTenant(
            pb.ResumeTenantRequest(tenant_id=w.a.id), metadata=c.md
        ),
        DENIED,
    ),
    (
        "DeleteTenant",
        lambda c, w: c.tenants.DeleteTenant(
            pb.DeleteTenantRequest(tenant_id=w.a.id), metadata=c.md
        ),
        DENIED,
    ),
    (
        "PublishTenantConfig",
        lambda c, w: c.tenants.PublishTenantConfig(
            pb.PublishTenantConfigRequest(tenant_id=w.a.id), metadata=c.md
        ),
        DENIED,
    ),
    (
        "CreateApiKey",
        lambda c, w: c.keys.CreateApiKey(
            pb.CreateApiKeyRequest(tenant_id=w.a.id, scope=pb.API_KEY_SCOPE_TENANT), metadata=c.md
        ),
        DENIED,
    ),
    (
        "ListApiKeys",
        lambda c, w: c.keys.ListApiKeys(pb.ListApiKeysRequest(tenant_id=w.a.id), metadata=c.md),
        DENIED,
    ),
    (
        "RevokeApiKey",
        lambda c, w: c.keys.RevokeApiKey(
            pb.RevokeApiKeyRequest(tenant_id=w.a.id, api_key_id=w.ids["ApiKey"]), metadata=c.md
        ),
        DENIED,
    ),
    (
        "RevokeApiKey",
        lambda c, w: c.keys.RevokeApiKey(
            pb.RevokeApiKeyRequest(tenant_id=w.b.id, api_key_id=w.ids["ApiKey"]), metadata=c.md
        ),
        MISSING,
    ),
    (
        "RotateApiKey",
        lambda c, w: c.keys.RotateApiKey(
            pb.RotateApiKeyRequest(tenant_id=w.a.id, api_key_id=w.ids["ApiKey"]), metadata=c.md
        ),
        DENIED,
    ),
    (
        "ListAuditEntries",
        lambda c, w: c.audit.ListAuditEntries(
            pb.ListAuditEntriesRequest(tenant_id=w.a.id), metadata=c.md
        ),
        DENIED,
    ),
    (
        "RotateApiKey",
        lambda c, w: c.keys.RotateApiKey(
            pb.RotateApiKeyRequest(tenant_id=w.b.id, api_key_id=w.ids["ApiKey"]), metadata=c.md
        ),
        MISSING,
    ),
    (
        "PutFlow",
        lambda c, w: c.flows.PutFlow(
            pb.PutFlowRequest(tenant_id=w.a.id, flow=flow()), metadata=c.md
        ),
        DENIED,
    ),
    (
        "GetFlow",
        lambda c, w: c.flows.GetFlow(
            pb.GetFlowRequest(tenant_id=w.a.id, flow_id=w.ids["Flow"]), metadata=c.md
        ),
        DENIED,
    ),
    (
        "GetFlow",
        lambda c, w: c.flows.GetFlow(
            pb.GetFlowRequest(tenant_id=w.b.id, flow_id=w.ids["Flow"]), metadata=c.md
        ),
        MISSING,
    ),
    (
        "GetFlow",
        lambda c, w: c.flows.GetFlow(
            pb.GetFlowRequest(tenant_id=w.b.id, flow_id=w.ids["Flow"], version=1), metadata=c.md
        ),
        MISSING,
    ),
    (
        "ListFlows",
        lambda c, w: c.flows.ListFlows(pb.ListFlowsRequest(tenant_id=w.a.id), metadata=c.md),
        DENIED,
    ),
    (
        "DeleteFlow",
        lambda c, w: c.flows.DeleteFlow(
            pb.DeleteFlowRequest(tenant_id=w.a.id, flow_id=w.ids["Flow"]), metadata=c.md
        ),
        DENIED,
    ),
    (
        "DeleteFlow",
        lambda c, w: c.flows.DeleteFlow(
            pb.DeleteFlowRequest(tenant_id=w.b.id, flow_id=w.ids["Flow"]), metadata=c.md
        ),
        MISSING,
    ),
    *_crud_cases("Agent", "Agents", "agents", "agent_id", agent),
    (
        "SearchDirectory",
        lambda c, w: c.agents.SearchDirectory(
            pb.SearchDirectoryRequest(tenant_id=w.a.id, query="li"), metadata=c.md
        ),
        DENIED,
    ),
    *_crud_cases("User", "Users", "users", "user_id", user),
    *_crud_cases("Channel", "Channels", "channels", "channel_id", web_channel),
    (
        "SetPassword",
        lambda c, w: c.users.SetPassword(
            pb.SetPasswordRequest(tenant_id=w.a.id, user_id=w.ids["User"], password=PASSWORD),
            metadata=c.md,
        ),
        DENIED,
    ),
    (
        "SetPassword",
        lambda c, w: c.users.SetPassword(
            pb.SetPasswordRequest(tenant_id=w.b.id, user_id=w.ids["User"], password=PASSWORD),
            metadata=c.md,
        ),
        MISSING,
    ),
    (
        "EndSessions",
        lambda c, w: c.users.EndSessions(
            pb.EndSessionsRequest(tenant_id=w.a.id, user_id=w.ids["User"]), metadata=c.md
        ),
        DENIED,
    ),
    (
        "EndSessions",
        lambda c, w: c.users.EndSessions(
            pb.EndSessionsRequest(tenant_id=w.b.id, user_id=w.ids["User"]), metadata=c.md
        ),
        MISSING,
    ),
    # Signing in takes no key: B's person cannot sign in to A, nor use A's tokens' ids.
    (
        "Login",
        lambda c, w: c.auth.Login(
            pb.LoginRequest(tenant=w.a.name, name="admin@b.test", password=PASSWORD)
        ),
        UNKNOWN_CREDENTIAL,
    ),
    (
        "Refresh",
        lambda c, w: c.auth.Refresh(pb.RefreshRequest(refresh_token=w.ids["Refresh"] + "x")),
        UNKNOWN_CREDENTIAL,
    ),
    (
        "Logout",
        lambda c, w: c.auth.Logout(pb.LogoutRequest(refresh_token=w.ids["Refresh"] + "x")),
        UNKNOWN_CREDENTIAL,
    ),
    (
        "ExchangeToken",
        lambda c, w: c.auth.ExchangeToken(
            pb.ExchangeTokenRequest(tenant=w.a.name, id_token="a.b.c")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,  # A trusts no issuer, whoever signed the token
    ),
    (
        "CreateCustomerSession",
        lambda c, w: c.auth.CreateCustomerSession(
            pb.CreateCustomerSessionRequest(tenant_id=w.a.id, interaction_id=str(uuid.uuid4())),
            metadata=c.md,
        ),
        DENIED,
    ),
    (
        "RotateSigningKey",
        lambda c, w: c.auth.RotateSigningKey(
            pb.RotateSigningKeyRequest(tenant_id=w.a.id), metadata=c.md
        ),
        DENIED,
    ),
    # Public by design (RFC 7517): A's public keys, to anyone, and nothing private.
    ("GetJwks", lambda c, w: _public_keys_only(c, w.a.id), PUBLIC),
    *_crud_cases("Queue", "Queues", "queues", "queue_id", queue),
    *_crud_cases("Template", "Templates", "notifications", "template_id", template),
    *_crud_cases("Rule", "Rules", "notifications", "rule_id", rule),
]


@pytest.fixture(scope="module")
async def world(tenants_service: Any) -> AsyncIterator[tuple[World, Client, Client]]:
    channel = grpc.aio.insecure_channel(tenants_service.address)
    admin = Client(channel, ADMIN_KEY)
    a, as_a = await onboard(admin)
    b, as_b = await onboard(admin)
    ids = {}
    ids["Agent"] = (
        await as_a.agents.CreateAgent(
            pb.CreateAgentRequest(tenant_id=a.id, agent=agent()), metadata=as_a.md
        )
    ).id
    ids["Queue"] = (
        await as_a.queues.CreateQueue(
            pb.CreateQueueRequest(tenant_id=a.id, queue=queue()), metadata=as_a.md
        )
    ).id
    ids["Flow"] = (
        await as_a.flows.PutFlow(pb.PutFlowRequest(tenant_id=a.id, flow=flow()), metadata=as_a.md)
    ).id
    ids["Template"] = (
        await as_a.notifications.CreateTemplate(
            pb.CreateTemplateRequest(tenant_id=a.id, template=template()), metadata=as_a.md
        )
    ).id
    ids["Rule"] = (
        await as_a.notifications.CreateRule(
            pb.CreateRuleRequest(tenant_id=a.id, rule=rule()), metadata=as_a.md
        )
    ).id
    ids["Channel"] = (
        await as_a.channels.CreateChannel(
            pb.CreateChannelRequest(tenant_id=a.id, channel=web_channel()), metadata=as_a.md
        )
    ).id
    ids["User"] = (
        await as_a.users.CreateUser(
            pb.CreateUserRequest(tenant_id=a.id, user=user(), password=PASSWORD), metadata=as_a.md
        )
    ).id
    await as_b.users.CreateUser(
        pb.CreateUserRequest(tenant_id=b.id, user=user("admin@b.test"), password=PASSWORD),
        metadata=as_b.md,
    )
    ids["Refresh"] = (
        await as_a.auth.Login(pb.LoginRequest(tenant=a.name, name=user().name, password=PASSWORD))
    ).refresh_token
    listed = await as_a.keys.ListApiKeys(pb.ListApiKeysRequest(tenant_id=a.id), metadata=as_a.md)
    ids["ApiKey"] = listed.api_keys[0].id
    yield World(a, b, ids), as_a, as_b
    await channel.close()


def test_every_rpc_has_an_isolation_case() -> None:
    every = {m.name for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert {name for name, _, _ in CASES} == every


@pytest.mark.parametrize(("rpc", "call", "code"), CASES, ids=[f"{n}-{c.name}" for n, _, c in CASES])
async def test_foreign_tenant_is_refused(
    world: tuple[World, Client, Client],
    rpc: str,
    call: Callable[[Client, World], Awaitable[Any]],
    code: grpc.StatusCode,
) -> None:
    w, _, as_b = world
    if code == PUBLIC:
        await call(as_b, w)
        return
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(as_b, w)
    assert caught.value.code() == code, f"{rpc}: {caught.value.code()} {caught.value.details()}"


async def test_tenant_a_is_untouched_and_b_sees_nothing_of_it(
    world: tuple[World, Client, Client],
) -> None:
    w, as_a, as_b = world
    assert (
        await as_a.tenants.GetTenant(pb.GetTenantRequest(tenant_id=w.a.id), metadata=as_a.md)
    ).revision == 1
    for noun, stub, method in [
        ("Agent", "agents", "GetAgent"),
        ("Queue", "queues", "GetQueue"),
        ("Template", "notifications", "GetTemplate"),
        ("Rule", "notifications", "GetRule"),
    ]:
        field = {"Template": "template_id", "Rule": "rule_id"}.get(noun, f"{noun.lower()}_id")
        got = await getattr(getattr(as_a, stub), method)(
            getattr(pb, f"{method}Request")(tenant_id=w.a.id, **{field: w.ids[noun]}),
            metadata=as_a.md,
        )
        assert got.revision == 1, noun
    keys = await as_a.keys.ListApiKeys(pb.ListApiKeysRequest(tenant_id=w.a.id), metadata=as_a.md)
    assert not keys.api_keys[0].HasField("revoke_time")
    assert (
        await as_a.flows.GetFlow(
            pb.GetFlowRequest(tenant_id=w.a.id, flow_id=w.ids["Flow"]), metadata=as_a.md
        )
    ).version == 1
    b_views = [
        await as_b.agents.ListAgents(pb.ListAgentsRequest(tenant_id=w.b.id), metadata=as_b.md),
        await as_b.queues.ListQueues(pb.ListQueuesRequest(tenant_id=w.b.id), metadata=as_b.md),
        await as_b.flows.ListFlows(pb.ListFlowsRequest(tenant_id=w.b.id), metadata=as_b.md),
        await as_b.notifications.ListTemplates(
            pb.ListTemplatesRequest(tenant_id=w.b.id), metadata=as_b.md
        ),
        await as_b.notifications.ListRules(pb.ListRulesRequest(tenant_id=w.b.id), metadata=as_b.md),
    ]
    assert all(w.a.id not in str(view) for view in b_views)
    fields = ["agents", "queues", "flows", "templates", "rules"]
    assert [len(getattr(v, f)) for v, f in zip(b_views, fields, strict=True)] == [0] * 5
