"""The gRPC adapter: requests in, service calls, responses out. No rules live here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message

from lianluo.common.v1 import common_pb2
from lianluo.runtime import auth
from lianluo.services.tenants.audio_api import AudioApi as AudioApi
from lianluo.services.tenants.domain import AGENT, CHANNEL, FLOW, QUEUE, RULE, TEMPLATE, USER, Kind
from lianluo.services.tenants.keys import ApiKeys
from lianluo.services.tenants.knowledge_api import KnowledgeApi as KnowledgeApi
from lianluo.services.tenants.people import People
from lianluo.services.tenants.service import TenantsService
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

Method = Callable[[Any, Message, Any], Awaitable[Message]]


def _page(token: str) -> common_pb2.PageResponse:
    return common_pb2.PageResponse(next_page_token=token)


def _crud_servicer(
    base: type,
    kind: Kind,
    noun: str,
    plural: str,
    list_response: type[Message],
    permissions: tuple[str, str] = ("config:read", "config:write"),
) -> type:
    """A servicer for one resource kind whose RPCs follow the standard methods (AIP-131..135).

    Agents, queues, templates and rules share exactly this shape, so one table drives all four
    instead of four copies of the same five methods.
    """
    field, id_field = kind.request_field, kind.id_field

    async def create(self: Any, request: Any, _context: Any) -> Any:
        return await self.svc.create(
            request.tenant_id, kind, getattr(request, field), request.request_id
        )

    async def get(self: Any, request: Any, _context: Any) -> Any:
        return await self.svc.get(request.tenant_id, kind, getattr(request, id_field))

    async def list_(self: Any, request: Any, _context: Any) -> Any:
        items, token = await self.svc.list_resources(
            request.tenant_id, kind, request.page.page_size, request.page.page_token
        )
        return list_response(**{plural: items, "page": _page(token)})

    async def update(self: Any, request: Any, _context: Any) -> Any:
        return await self.svc.update(
            request.tenant_id,
            kind,
            getattr(request, field),
            request.update_mask,
            request.expected_revision,
        )

    async def delete(self: Any, request: Any, _context: Any) -> Any:
        await self.svc.delete(request.tenant_id, kind, getattr(request, id_field))
        return getattr(pb, f"Delete{noun}Response")()

    def __init__(self: Any, svc: TenantsService) -> None:
        self.svc = svc

    read, write = auth.needs(permissions[0]), auth.needs(permissions[1])
    methods: dict[str, Any] = {
        "__init__": __init__,
        f"Create{noun}": write(create),
        f"Get{noun}": read(get),
        f"List{plural.title()}": read(list_),
        f"Update{noun}": write(update),
        f"Delete{noun}": write(delete),
    }
    return type(f"{noun}Api", (base,), methods)


ChannelApi = _crud_servicer(
    rpc.ChannelServiceServicer, CHANNEL, "Channel", "channels", pb.ListChannelsResponse
)


class AgentApi(
    _crud_servicer(rpc.AgentServiceServicer, AGENT, "Agent", "agents", pb.ListAgentsResponse)  # type: ignore[misc]
):
    @auth.needs("directory:read")
    async def SearchDirectory(
        self, request: pb.SearchDirectoryRequest, _: Any
    ) -> pb.SearchDirectoryResponse:
        entries, token = await self.svc.search_directory(
            request.tenant_id, request.query, request.page.page_size, request.page.page_token
        )
        return pb.SearchDirectoryResponse(entries=entries, page=_page(token))


QueueApi = _crud_servicer(rpc.QueueServiceServicer, QUEUE, "Queue", "queues", pb.ListQueuesResponse)


class _UserSessions:
    """What people have beyond the standard methods: a password on create, and sessions."""

    def __init__(self, svc: TenantsService, people: People) -> None:
        self.svc = svc
        self.people = people

    @auth.needs("people:write")
    async def CreateUser(self, request: pb.CreateUserRequest, _: Any) -> pb.User:
        return await self.people.create_user(
            request.tenant_id, request.user, request.request_id, request.password
        )

    @auth.needs("people:write")
    async def SetPassword(self, request: pb.SetPasswordRequest, _: Any) -> pb.User:
        return await self.people.set_password(request.tenant_id, request.user_id, request.password)

    @auth.needs("people:write")
    async def EndSessions(self, request: pb.EndSessionsRequest, _: Any) -> pb.User:
        return await self.people.end_sessions(request.tenant_id, request.user_id)


UserApi = type(
    "UserApi",
    (
        _UserSessions,
        _crud_servicer(
            rpc.UserServiceServicer,
            USER,
            "User",
            "users",
            pb.ListUsersResponse,
            ("people:read", "people:write"),
        ),
    ),
    {},
)


class AuthApi(rpc.AuthServiceServicer):
    def __init__(self, people: People) -> None:
        self.people = people

    @auth.needs(auth.PUBLIC)
    async def Login(self, request: pb.LoginRequest, _: Any) -> pb.Tokens:
        return await self.people.login(request.tenant, request.name, request.password)

    @auth.needs(auth.PUBLIC)
    async def Refresh(self, request: pb.RefreshRequest, _: Any) -> pb.Tokens:
        return await self.people.refresh(request.refresh_token)

    @auth.needs(auth.PUBLIC)
    async def Logout(self, request: pb.LogoutRequest, _: Any) -> pb.LogoutResponse:
        await self.people.logout(request.refresh_token)
        return pb.LogoutResponse()

    @auth.needs(auth.PUBLIC)
    async def ExchangeToken(self, request: pb.ExchangeTokenRequest, _: Any) -> pb.Tokens:
        return await self.people.exchange(request.tenant, request.id_token)

    @auth.needs("sessions:write")
    async def CreateCustomerSession(
        self, request: pb.CreateCustomerSessionRequest, _: Any
    ) -> pb.CustomerSession:
        return await self.people.customer_session(request)

    @auth.needs(auth.PUBLIC)
    async def GetJwks(self, request: pb.GetJwksRequest, _: Any) -> pb.Jwks:
        return await self.people.jwks(request.tenant_id)

    @auth.needs("keys:write")
    async def RotateSigningKey(self, request: pb.RotateSigningKeyRequest, _: Any) -> pb.Jwks:
        return await self.people.rotate_signing_key(request.tenant_id, request.overlap_seconds)


# Templates and rules share one proto service.
NotificationConfigApi = type(
    "NotificationConfigApi",
    (
        _crud_servicer(
            rpc.NotificationConfigServiceServicer,
            TEMPLATE,
            "Template",
            "templates",
            pb.ListTemplatesResponse,
        ),
        _crud_servicer(
            rpc.NotificationConfigServiceServicer, RULE, "Rule", "rules", pb.ListRulesResponse
        ),
    ),
    {},
)


class TenantApi(rpc.TenantServiceServicer):
    def __init__(self, svc: TenantsService) -> None:
        self.svc = svc

    @auth.needs("platform:admin")
    async def CreateTenant(self, request: pb.CreateTenantRequest, _: Any) -> pb.Tenant:
        return await self.svc.create_tenant(request.tenant, request.request_id, request.tenant_id)

    @auth.needs("config:read")
    async def GetTenant(self, request: pb.GetTenantRequest, _: Any) -> pb.Tenant:
        return await self.svc.get_tenant(request.tenant_id)

    @auth.needs("platform:admin")
    async def ListTenants(self, request: pb.ListTenantsRequest, _: Any) -> pb.ListTenantsResponse:
        items, token = await self.svc.list_tenants(request.page.page_size, request.page.page_token)
        return pb.ListTenantsResponse(tenants=items, page=_page(token))

    @auth.needs("config:write")
    async def UpdateTenant(self, request: pb.UpdateTenantRequest, _: Any) -> pb.Tenant:
        return await self.svc.update_tenant(
            request.tenant, request.update_mask, request.expected_revision
        )

    @auth.needs("platform:admin")
    async def SuspendTenant(self, request: pb.SuspendTenantRequest, _: Any) -> pb.Tenant:
        return await self.svc.set_tenant_state(
            request.tenant_id, pb.TENANT_STATE_SUSPENDED, request.reason
        )

    @auth.needs("platform:admin")
    async def ResumeTenant(self, request: pb.ResumeTenantRequest, _: Any) -> pb.Tenant:
        return await self.svc.set_tenant_state(request.tenant_id, pb.TENANT_STATE_ACTIVE)

    @auth.needs("platform:admin")
    async def PublishTenantConfig(
        self, request: pb.PublishTenantConfigRequest, _: Any
    ) -> pb.PublishTenantConfigResponse:
        published = await self.svc.publish_config(request.tenant_id)
        return pb.PublishTenantConfigResponse(published=published)

    @auth.needs("platform:admin")
    async def DeleteTenant(
        self, request: pb.DeleteTenantRequest, _: Any
    ) -> pb.DeleteTenantResponse:
        await self.svc.delete_tenant(request.tenant_id)
        return pb.DeleteTenantResponse()


class ApiKeyApi(rpc.ApiKeyServiceServicer):
    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    @auth.needs("keys:write")
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, _: Any
    ) -> pb.CreateApiKeyResponse:
        expires = _expiry(request)
        key, secret = await self.keys.create(
            request.tenant_id,
            request.scope,
            request.display_name,
            request.request_id,
            expires,
            request.permissions,
        )
        return pb.CreateApiKeyResponse(api_key=key, secret=secret)

    @auth.needs("keys:write")
    async def RotateApiKey(
        self, request: pb.RotateApiKeyRequest, _: Any
    ) -> pb.RotateApiKeyResponse:
        expires = _expiry(request)
        key, secret, previous = await self.keys.rotate(
            request.tenant_id,
            request.api_key_id,
            request.overlap_seconds,
            request.request_id,
            expires,
        )
        return pb.RotateApiKeyResponse(api_key=key, secret=secret, previous=previous)

    @auth.needs("keys:read")
    async def ListApiKeys(self, request: pb.ListApiKeysRequest, _: Any) -> pb.ListApiKeysResponse:
        items, token = await self.keys.list(
            request.tenant_id, request.page.page_size, request.page.page_token
        )
        return pb.ListApiKeysResponse(api_keys=items, page=_page(token))

    @auth.needs("keys:write")
    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, _: Any) -> pb.ApiKey:
        return await self.keys.revoke(request.tenant_id, request.api_key_id)


class AuditApi(rpc.AuditServiceServicer):
    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    @auth.needs("audit:read")
    async def ListAuditEntries(
        self, request: pb.ListAuditEntriesRequest, _: Any
    ) -> pb.ListAuditEntriesResponse:
        entries, token = await self.keys.audit(
            request.tenant_id, request.page.page_size, request.page.page_token
        )
        return pb.ListAuditEntriesResponse(entries=entries, page=_page(token))


class FlowApi(rpc.FlowServiceServicer):
    def __init__(self, svc: TenantsService) -> None:
        self.svc = svc

    @auth.needs("config:write")
    async def PutFlow(self, request: pb.PutFlowRequest, _: Any) -> pb.Flow:
        return await self.svc.put_flow(request.tenant_id, request.flow)

    @auth.needs("config:read")
    async def GetFlow(self, request: pb.GetFlowRequest, _: Any) -> pb.Flow:
        return await self.svc.get_flow(request.tenant_id, request.flow_id, request.version)

    @auth.needs("config:read")
    async def ListFlows(self, request: pb.ListFlowsRequest, _: Any) -> pb.ListFlowsResponse:
        items, token = await self.svc.list_resources(
            request.tenant_id, FLOW, request.page.page_size, request.page.page_token
        )
        return pb.ListFlowsResponse(flows=items, page=_page(token))

    @auth.needs("config:write")
    async def DeleteFlow(self, request: pb.DeleteFlowRequest, _: Any) -> pb.DeleteFlowResponse:
        await self.svc.delete(request.tenant_id, FLOW, request.flow_id)
        return pb.DeleteFlowResponse()


def _expiry(request: pb.CreateApiKeyRequest | pb.RotateApiKeyRequest) -> datetime | None:
    """The request's expire_time, if set (its range is checked at the entry)."""
    return request.expire_time.ToDatetime(UTC) if request.HasField("expire_time") else None
