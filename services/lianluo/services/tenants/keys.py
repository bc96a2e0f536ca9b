"""API keys: issue (the secret shown once), list, revoke, and resolve for authentication."""

from __future__ import annotations

import hmac
import uuid

import asyncpg

from lianluo.runtime import auth
from lianluo.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from lianluo.services.tenants import domain, events
from lianluo.services.tenants.events import key_message
from lianluo.services.tenants.repository import Repository, next_token, parse_page
from lianluo.services.tenants.service import scoped_tenant
from lianluo.tenants.v1 import tenants_pb2 as pb

_ACTIVE = pb.TenantState.Name(pb.TENANT_STATE_ACTIVE)


def _owner(tenant_id: str, admin_scope: bool) -> uuid.UUID | None:
    """Authorise key management: admin keys need an admin, tenant keys that tenant."""
    if admin_scope:
        auth.require_admin()
        if tenant_id:
            raise InvalidArgument([FieldViolation("tenant_id", "admin keys have no tenant")])
        return None
    return scoped_tenant(tenant_id)


class ApiKeys:
    """Key management for the API, and the KeyResolver of the tenants service itself."""

    def __init__(self, pool: asyncpg.Pool, repo: Repository, config_topic: str) -> None:
        self._pool = pool
        self._repo = repo
        self._topic = config_topic

    async def create(
        self, tenant_id: str, scope: int, display_name: str, request_id: str = ""
    ) -> tuple[pb.ApiKey, str]:
        if scope not in (pb.API_KEY_SCOPE_ADMIN, pb.API_KEY_SCOPE_TENANT):
            raise InvalidArgument([FieldViolation("scope", "must be ADMIN or TENANT")])
        if len(display_name) > domain.MAX_DISPLAY_NAME:
            raise InvalidArgument([FieldViolation("display_name", "at most 200 characters")])
        owner = _owner(tenant_id, scope == pb.API_KEY_SCOPE_ADMIN)
        async with self._pool.acquire() as conn, conn.transaction():
            if owner is not None and not await self._repo.lock_tenant(conn, owner):
                raise NotFound("tenant", tenant_id)
            if request_id:
                earlier = await self._repo.get_key_by_request(conn, owner, request_id)
                if earlier is not None:
                    # The secret is never stored, so a retry cannot be answered with it again.
                    raise AlreadyExists("api_key", earlier["id"])
            issued = auth.issue_key()
            row = {
                "id": issued.key_id,
                "tenant_id": owner,
                "scope": scope,
                "display_name": display_name,
                "secret_sha256": issued.secret_sha256,
                "request_id": request_id or None,
                "created_at": events.now(),
                "revoked_at": None,
            }
            await self._repo.insert_key(conn, row)
            await events.publish_key(conn, self._topic, row)
        return key_message(row), issued.token

    async def list(self, tenant_id: str, size: int, token: str) -> tuple[list[pb.ApiKey], str]:
        """Keys of a tenant, or admin keys when `tenant_id` is empty."""
        owner = _owner(tenant_id, not tenant_id)
        scope = f"api_key:{owner}"
        page = parse_page(size, token, scope)
        async with self._pool.acquire() as conn:
            rows = await self._repo.list_keys(conn, owner, page)
        more = next_token(scope, rows[-1]["id"]) if len(rows) == page.size else ""
        return [key_message(dict(r)) for r in rows], more

    async def revoke(self, tenant_id: str, key_id: str) -> pb.ApiKey:
        owner = _owner(tenant_id, not tenant_id)
        if not key_id:
            raise InvalidArgument([FieldViolation("api_key_id", "must be set")])
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._repo.revoke_key(conn, owner, key_id, events.now())
            if row is None:
                raise NotFound("api_key", key_id)
            await events.publish_key(conn, self._topic, dict(row))
        return key_message(dict(row))

    async def resolve(self, key_id: str, secret_sha256: str) -> auth.Principal | None:
        async with self._pool.acquire() as conn:
            row = await self._repo.resolve_key(conn, key_id)
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["secret_sha256"], secret_sha256):
            return None
        if row["tenant_id"] is None:
            return auth.Principal(key_id=key_id, tenant_id=None)
        if row["tenant_state"] is None:
            return None  # the tenant is gone
        if row["tenant_state"] != _ACTIVE:
            raise PermissionDenied("the tenant is suspended")
        return auth.Principal(key_id=key_id, tenant_id=str(row["tenant_id"]))
