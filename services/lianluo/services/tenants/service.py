"""The tenants service's logic: authorise, validate, write, and announce, in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import asyncpg
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from lianluo.runtime import auth, quotas, tokens
from lianluo.runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from lianluo.services.tenants import domain, events, signing
from lianluo.services.tenants.domain import AGENT, FLOW, KINDS, TENANT, USER, Kind
from lianluo.services.tenants.repository import Page, Repository, next_token, parse_id, parse_page
from lianluo.tenants.v1 import tenants_pb2 as pb


def _now() -> tuple[datetime, timestamp_pb2.Timestamp]:
    now = datetime.now(UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(now)
    return now, stamp


M = TypeVar("M", bound=Message)


def _copy(message: M) -> M:
    out = type(message)()
    out.CopyFrom(message)
    return out


def _without_server_fields(message: M, extra: tuple[str, ...] = ()) -> M:
    """A copy of a client's resource without what only the server may set."""
    out = _copy(message)
    for name in (*domain.SERVER_FIELDS, *extra):
        if name in out.DESCRIPTOR.fields_by_name:
            out.ClearField(name)
    return out


def scoped_tenant(tenant_id: str) -> uuid.UUID:
    """Authorise the caller for `tenant_id` and parse it."""
    auth.require_tenant(tenant_id)
    parsed = parse_id(tenant_id, "tenant_id")
    if parsed is None:
        raise NotFound("tenant", tenant_id)
    return parsed


class TenantsService:
    """Every operation of the tenants API, scoped to the caller's tenant."""

    def __init__(self, pool: asyncpg.Pool, repo: Repository, config_topic: str) -> None:
        self._pool = pool
        self._repo = repo
        self._topic = config_topic

    # ------------------------------------------------------------------ helpers

    async def _publish(self, conn: asyncpg.Connection, kind: Kind, message: Any) -> None:
        await events.publish_change(
            conn,
            self._topic,
            tenant_id=message.tenant_id if kind is not TENANT else message.id,
            kind=kind.name,
            resource_id=message.id,
            revision=message.revision,
            resource=message,
        )

    async def _check_references(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, kind: Kind, message: Message
    ) -> None:
        wanted = kind.references(message)
        problems = []
        for ref_kind, name, path in wanted:
            found = await self._repo.names_used(conn, tenant_id, KINDS[ref_kind], [name])
            if name not in found:
                problems.append(FieldViolation(path, f"no {ref_kind.replace('_', ' ')} {name!r}"))
        if problems:
            raise InvalidArgument(problems)
        if isinstance(message, pb.User):
            await self._bind_user(conn, tenant_id, message)

    async def _bind_user(self, conn: asyncpg.Connection, tid: uuid.UUID, user: pb.User) -> None:
        """A person gets no role stronger than the caller's own, and an agent's user the id of
        the agent it names (agents' names never change)."""
        if not auth.current_principal().grants(auth.ROLE_PERMISSIONS[tokens.ROLES[user.role]]):
            raise PermissionDenied(
                "a caller can give a person only a role no stronger than its own"
            )
        user.agent_id = ""
        if user.agent:
            agent = await self._repo.get_by_name(conn, tid, AGENT, user.agent)
            user.agent_id = getattr(agent, "id", "")

    async def _check_quota(self, conn: asyncpg.Connection, tid: uuid.UUID, kind: Kind) -> None:
        """Refuse an agent over the tenant's `max_agents` (the tenant row is locked)."""
        if kind is not AGENT:
            return
        tenant = await self._repo.get(conn, tid, TENANT, tid)
        limit = quotas.of(tenant).max_agents if isinstance(tenant, pb.Tenant) else 0
        if limit and await self._repo.count(conn, tid, AGENT) >= limit:
            raise ResourceExhausted(
                f"tenants/{tid}", "max_agents", f"the tenant has its {limit:,} agents", 60.0
            )

    # ------------------------------------------------------------------ tenant-owned resources

    async def create(
        self,
        tenant_id: str,
        kind: Kind,
        message: Message,
        request_id: str = "",
        created: Callable[[asyncpg.Connection, Any], Awaitable[None]] | None = None,
    ) -> Message:
        """Create a resource; `created` runs in its transaction when it is new (not when a
        retry with the same request id finds the first one)."""
        tid = scoped_tenant(tenant_id)
        resource: Any = _without_server_fields(message)
        domain.validate(kind, resource)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._repo.lock_tenant(conn, tid):
                raise NotFound("tenant", tenant_id)
            if request_id:
                earlier = await self._repo.get_by_request(conn, tid, kind, request_id)
                if earlier is not None:
                    return domain.redact(kind, earlier)
            await self._check_references(conn, tid, kind, resource)
            if await self._repo.get_by_name(conn, tid, kind, resource.name) is not None:
                raise AlreadyExists(kind.name, resource.name)
            await self._check_quota(conn, tid, kind)
            now, stamp = _now()
            resource.id = str(uuid.uuid4())
            resource.tenant_id = str(tid)
            resource.revision = 1
            resource.create_time.CopyFrom(stamp)
            if resource.DESCRIPTOR.fields_by_name.get("update_time"):
                resource.update_time.CopyFrom(stamp)
            await self._insert(conn, tid, kind, resource, request_id or None, now)
            if created is not None:
                await created(conn, resource)
            await self._publish(conn, kind, resource)
        return domain.redact(kind, resource)

    async def _insert(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        kind: Kind,
        resource: Any,
        request_id: str | None,
        now: datetime,
    ) -> None:
        try:
            async with conn.transaction():
                await self._repo.insert(
                    conn,
                    tid,
                    kind,
                    uuid.UUID(resource.id),
                    resource.name,
                    resource,
                    request_id,
                    now,
                )
        except asyncpg.UniqueViolationError as error:
            # A concurrent create of the same name won the race.
            raise AlreadyExists(kind.name, resource.name) from error

    async def get(self, tenant_id: str, kind: Kind, resource_id: str) -> Message:
        tid = scoped_tenant(tenant_id)
        rid = parse_id(resource_id, kind.id_field)
        async with self._pool.acquire() as conn:
            found = None if rid is None else await self._repo.get(conn, tid, kind, rid)
        if found is None:
            raise NotFound(kind.name, resource_id)
        return domain.redact(kind, found)

    async def list_resources(
        self, tenant_id: str, kind: Kind, size: int, token: str
    ) -> tuple[list[Any], str]:
        tid = scoped_tenant(tenant_id)
        scope = f"{kind.name}:{tid}"
        return await self._list_page(tid, kind, parse_page(size, token, scope), scope)

    async def search_directory(
        self, tenant_id: str, query: str, size: int, token: str
    ) -> tuple[list[pb.DirectoryEntry], str]:
        """Agents and experts a transfer may name, found by name, skill or expertise."""
        tid = scoped_tenant(tenant_id)
        found = query.strip()
        if not 0 < len(found) <= 100:
            raise InvalidArgument([FieldViolation("query", "1 to 100 characters")])
        # The token is bound to the query: another query's token starts elsewhere.
        scope = f"directory:{tid}:{found.lower()}"
        page = parse_page(size, token, scope)
        async with self._pool.acquire() as conn:
            agents = await self._repo.search_agents(conn, tid, found, page)
        token = next_token(scope, agents[-1].name) if len(agents) == page.size else ""
        return [domain.directory_entry(a) for a in agents], token

    async def _list_page(
        self, tid: uuid.UUID | None, kind: Kind, page: Page, scope: str
    ) -> tuple[list[Any], str]:
        async with self._pool.acquire() as conn:
            items: list[Any] = await self._repo.list_page(conn, tid, kind, page)
        token = next_token(scope, items[-1].name) if len(items) == page.size else ""
        return [domain.redact(kind, i) for i in items], token

    async def update(
        self,
        tenant_id: str,
        kind: Kind,
        patch: Message,
        mask: field_mask_pb2.FieldMask,
        expected_revision: int = 0,
    ) -> Message:
        tid = scoped_tenant(tenant_id)
        resource_id: str = getattr(patch, "id")  # noqa: B009 - every resource has an id
        rid = parse_id(resource_id, f"{kind.request_field}.id")
        async with self._pool.acquire() as conn, conn.transaction():
            stored = (
                None if rid is None else await self._repo.get(conn, tid, kind, rid, for_update=True)
            )
            if stored is None or rid is None:
                raise NotFound(kind.name, resource_id)
            updated = await self._apply(conn, tid, kind, stored, patch, mask, expected_revision)
        return domain.redact(kind, updated)

    async def _apply(
        self,
        conn: asyncpg.Connection,
        tid: uuid.UUID,
        kind: Kind,
        stored: Any,
        patch: Message,
        mask: field_mask_pb2.FieldMask,
        expected_revision: int,
    ) -> Any:
        """Write the masked change of a locked resource, if it changes anything."""
        if expected_revision and stored.revision != expected_revision:
            raise Aborted(
                kind.name,
                stored.id,
                f"{kind.name} {stored.id} is at revision {stored.revision}, "
                f"not {expected_revision}; read it again",
            )
        updated: Any = domain.apply_update(kind, stored, patch, mask)
        domain.validate(kind, updated)
        if kind is not TENANT:
            await self._check_references(conn, tid, kind, updated)
        if updated == stored:
            return stored
        now, stamp = _now()
        updated.revision = stored.revision + 1
        updated.update_time.CopyFrom(stamp)
        await self._repo.replace(
            conn, tid, kind, uuid.UUID(stored.id), updated.revision, updated, now
        )
        await self._publish(conn, kind, updated)
        return updated

    async def delete(self, tenant_id: str, kind: Kind, resource_id: str) -> None:
        tid = scoped_tenant(tenant_id)
        rid = parse_id(resource_id, kind.id_field)
        async with self._pool.acquire() as conn, conn.transaction():
            stored: Any = (
                None if rid is None else await self._repo.get(conn, tid, kind, rid, for_update=True)
            )
            if stored is None or rid is None:
                raise NotFound(kind.name, resource_id)
            users = await self._repo.referrers(conn, tid, kind, stored.name)
            if users:
                raise FailedPrecondition(
                    f"{kind.name}/{stored.name}", f"still used by {', '.join(users)}"
                )
            await self._repo.delete(conn, tid, kind, rid)
            if kind is USER:
                await self._repo.forget_credentials(conn, tid, rid)
            # Flows count versions where other resources count revisions; either way the
            # deletion is the next change of the resource, so followers apply it last.
            current = stored.version if kind is FLOW else stored.revision
            await events.publish_change(
                conn,
                self._topic,
                tenant_id=str(tid),
                kind=kind.name,
                resource_id=stored.id,
                revision=current + 1,
                resource=None,
            )

    # ------------------------------------------------------------------ flows (versioned)

    async def put_flow(self, tenant_id: str, flow: pb.Flow) -> pb.Flow:
        """Store a flow by name: the first version, or a new one when it changed."""
        tid = scoped_tenant(tenant_id)
        candidate = _without_server_fields(flow, ("version",))
        domain.validate(FLOW, candidate)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._repo.lock_tenant(conn, tid):
                raise NotFound("tenant", tenant_id)
            await self._check_references(conn, tid, FLOW, candidate)
            stored: Any = await self._repo.get_by_name(conn, tid, FLOW, candidate.name)
            now, stamp = _now()
            if stored is None:
                candidate.id = str(uuid.uuid4())
                candidate.tenant_id = str(tid)
                candidate.version = 1
                candidate.create_time.CopyFrom(stamp)
                await self._insert(conn, tid, FLOW, candidate, None, now)
                await self._publish_flow(conn, candidate)
                return candidate
            if stored.entry_node == candidate.entry_node and stored.nodes == candidate.nodes:
                return cast(pb.Flow, stored)
            candidate.id, candidate.tenant_id = stored.id, stored.tenant_id
            candidate.version = stored.version + 1
            candidate.create_time.CopyFrom(stamp)
            await self._repo.replace(
                conn, tid, FLOW, uuid.UUID(stored.id), candidate.version, candidate, now
            )
            await self._publish_flow(conn, candidate)
            return candidate

    async def _publish_flow(self, conn: asyncpg.Connection, flow: pb.Flow) -> None:
        await events.publish_change(
            conn,
            self._topic,
            tenant_id=flow.tenant_id,
            kind=FLOW.name,
            resource_id=flow.id,
            revision=flow.version,
            resource=flow,
        )

    async def get_flow(self, tenant_id: str, flow_id: str, version: int) -> pb.Flow:
        tid = scoped_tenant(tenant_id)
        if version < 0:
            raise InvalidArgument([FieldViolation("version", "must be 0 (latest) or more")])
        rid = parse_id(flow_id, "flow_id")
        async with self._pool.acquire() as conn:
            if rid is None:
                found = None
            elif version:
                found = await self._repo.get_revision(conn, tid, FLOW, rid, version)
            else:
                found = await self._repo.get(conn, tid, FLOW, rid)
        if not isinstance(found, pb.Flow):
            raise NotFound("flow", f"{flow_id}@{version}" if version else flow_id)
        return found

    # ------------------------------------------------------------------ tenants

    async def create_tenant(
        self, tenant: pb.Tenant, request_id: str = "", tenant_id: str = ""
    ) -> pb.Tenant:
        auth.require_admin()
        resource: Any = _without_server_fields(tenant, ("state", "suspend_reason"))
        domain.validate(TENANT, resource)
        async with self._pool.acquire() as conn, conn.transaction():
            if request_id:
                earlier = await self._repo.get_by_request(conn, None, TENANT, request_id)
                if isinstance(earlier, pb.Tenant):
                    return earlier
            now, stamp = _now()
            tid = parse_id(tenant_id, "tenant_id") if tenant_id else uuid.uuid4()
            if tid is None:
                raise InvalidArgument([FieldViolation("tenant_id", "must be a UUID")])
            if await self._repo.get(conn, tid, TENANT, tid) is not None:
                raise AlreadyExists("tenant", str(tid))
            resource.id = str(tid)
            resource.state = pb.TENANT_STATE_ACTIVE
            resource.revision = 1
            resource.create_time.CopyFrom(stamp)
            resource.update_time.CopyFrom(stamp)
            await self._insert(conn, tid, TENANT, resource, request_id or None, now)
            await self._publish(conn, TENANT, resource)
            # Its first signing key now, so that it has reached every service by the time the
            # tenant's first person signs in.
            await signing.add_key(conn, self._repo, self._topic, tid, now)
        return cast(pb.Tenant, resource)

    async def get_tenant(self, tenant_id: str) -> pb.Tenant:
        found = await self.get(tenant_id, TENANT, tenant_id)
        assert isinstance(found, pb.Tenant)
        return found

    async def list_tenants(self, size: int, token: str) -> tuple[list[Any], str]:
        auth.require_admin()
        return await self._list_page(None, TENANT, parse_page(size, token, "tenant"), "tenant")

    async def update_tenant(
        self, patch: pb.Tenant, mask: field_mask_pb2.FieldMask, expected_revision: int = 0
    ) -> pb.Tenant:
        # The plan and quotas are billing and the cell is placement: they belong to the platform.
        admin_only = {"plan", "cell", "quotas"} & (set(mask.paths) or domain.TENANT.mutable)
        if admin_only and not auth.current_principal().is_admin:
            raise PermissionDenied(
                f"only an admin can change a tenant's {', '.join(sorted(admin_only))}"
            )
        updated = await self.update(patch.id, TENANT, patch, mask, expected_revision)
        assert isinstance(updated, pb.Tenant)
        return updated

    async def set_tenant_state(
        self, tenant_id: str, state: pb.TenantState.ValueType, reason: str = ""
    ) -> pb.Tenant:
        """Suspend or resume a tenant (admin only)."""
        auth.require_admin()
        tid = scoped_tenant(tenant_id)
        async with self._pool.acquire() as conn, conn.transaction():
            stored: Any = await self._repo.get(conn, tid, TENANT, tid, for_update=True)
            if stored is None:
                raise NotFound("tenant", tenant_id)
            if stored.state == state:
                return cast(pb.Tenant, stored)
            now, stamp = _now()
            stored.state = state
            stored.suspend_reason = reason if state == pb.TENANT_STATE_SUSPENDED else ""
            stored.revision += 1
            stored.update_time.CopyFrom(stamp)
            await self._repo.replace(conn, tid, TENANT, tid, stored.revision, stored, now)
            await self._publish(conn, TENANT, stored)
        return cast(pb.Tenant, stored)

    async def publish_config(self, tenant_id: str) -> int:
        """Announce the tenant's whole configuration again, as each part was last changed;
        the records published."""
        auth.require_admin()
        tid = scoped_tenant(tenant_id)
        async with self._pool.acquire() as conn, conn.transaction():
            resources = await self._repo.all_of(conn, tid)
            if not resources:
                raise NotFound("tenant", tenant_id)
            for kind, message in resources:
                await self._publish(conn, kind, message)
            keys = await self._repo.keys_of(conn, tid)
            for row in keys:
                await events.publish_key(conn, self._topic, dict(row))
            signing_keys = await self._repo.signing_keys(conn, tid)
            for key in signing_keys:
                await signing.publish(conn, self._topic, tid, key)
        return len(resources) + len(keys) + len(signing_keys)

    async def delete_tenant(self, tenant_id: str) -> None:
        """Delete a tenant with everything it owns and revoke its keys, announcing each."""
        auth.require_admin()
        tid = scoped_tenant(tenant_id)
        async with self._pool.acquire() as conn, conn.transaction():
            stored: Any = await self._repo.get(conn, tid, TENANT, tid, for_update=True)
            if stored is None:
                raise NotFound("tenant", tenant_id)
            now, _ = _now()
            for row in await self._repo.revoke_tenant_keys(conn, tid, now):
                await events.publish_key(conn, self._topic, dict(row))
            for kind_name, rid in await self._repo.delete_tenant(conn, tid):
                await events.publish_change(
                    conn,
                    self._topic,
                    tenant_id=str(tid),
                    kind=kind_name,
                    resource_id=str(rid),
                    revision=0,
                    resource=None,
                )
