"""API keys: issue (the secret shown once), list, revoke, and resolve for authentication."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from lianluo.runtime import auth
from lianluo.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violations,
)
from lianluo.services.tenants import domain, events
from lianluo.services.tenants.events import key_message
from lianluo.services.tenants.repository import Page, Repository, next_token, parse_page
from lianluo.services.tenants.service import scoped_tenant
from lianluo.tenants.v1 import tenants_pb2 as pb

_ACTIVE = pb.TenantState.Name(pb.TENANT_STATE_ACTIVE)
MAX_KEY_LIFETIME = timedelta(days=3653)
MAX_OVERLAP = timedelta(days=30)


def _permissions(asked: Sequence[str], scope: int) -> frozenset[str] | None:
    """The permissions a new key is narrowed to; None when it is not narrowed."""
    if not asked:
        return None
    v = Violations()
    if scope != pb.API_KEY_SCOPE_TENANT:
        v.add("permissions", "only a tenant's key can be narrowed")
    for i, name in enumerate(asked):
        if name not in auth.PERMISSIONS or name == auth.PLATFORM:
            v.add(f"permissions[{i}]", "not a permission of a tenant's key (docs/security.md)")
    v.raise_if_any()
    return frozenset(asked)


def _may_grant(permissions: frozenset[str] | None) -> None:
    """A key never makes a key that may do more than itself."""
    if not auth.current_principal().grants(permissions):
        raise PermissionDenied("a key can give a new key only permissions it has itself")


def _ended(row: asyncpg.Record, now: datetime) -> bool:
    """A key revoked, or past its expiry."""
    return row["revoked_at"] is not None or (
        row["expires_at"] is not None and row["expires_at"] <= now
    )


def _check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and not now < expires_at <= now + MAX_KEY_LIFETIME:
        raise InvalidArgument(
            [FieldViolation("expire_time", "must be in the future, at most ten years ahead")]
        )


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
        self,
        tenant_id: str,
        scope: int,
        display_name: str,
        request_id: str = "",
        expires_at: datetime | None = None,
        permissions: Sequence[str] = (),
    ) -> tuple[pb.ApiKey, str]:
        if scope not in (pb.API_KEY_SCOPE_ADMIN, pb.API_KEY_SCOPE_TENANT):
            raise InvalidArgument([FieldViolation("scope", "must be ADMIN or TENANT")])
        now = events.now()
        _check_expiry(expires_at, now)
        narrowed = _permissions(permissions, scope)
        if len(display_name) > domain.MAX_DISPLAY_NAME:
            raise InvalidArgument([FieldViolation("display_name", "at most 200 characters")])
        owner = _owner(tenant_id, scope == pb.API_KEY_SCOPE_ADMIN)
        _may_grant(narrowed)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._claim(conn, owner, tenant_id, request_id)
            row, token = await self._issue(
                conn, owner, scope, display_name, request_id, expires_at, now, narrowed
            )
        return key_message(row), token

    async def rotate(
        self,
        tenant_id: str,
        key_id: str,
        overlap_seconds: int,
        request_id: str = "",
        expires_at: datetime | None = None,
    ) -> tuple[pb.ApiKey, str, pb.ApiKey]:
        """A new key in the old one's place; the old one ends after the overlap."""
        owner = _owner(tenant_id, not tenant_id)
        v = Violations()
        v.check(bool(key_id), "api_key_id", "must be set")
        v.check(
            0 <= overlap_seconds <= MAX_OVERLAP.total_seconds(),
            "overlap_seconds",
            "0 to 2,592,000 (30 days)",
        )
        v.raise_if_any()
        now = events.now()
        _check_expiry(expires_at, now)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._claim(conn, owner, tenant_id, request_id)
            old = await self._repo.get_key(conn, owner, key_id)
            if old is None:
                raise NotFound("api_key", key_id)
            if _ended(old, now):
                raise FailedPrecondition(
                    f"api_key/{key_id}", "the key is revoked or expired: create a new one"
                )
            kept = None if old["permissions"] is None else frozenset(old["permissions"])
            # Rotation hands over a key as strong as the old one: only to a caller as strong.
            _may_grant(kept)
            row, token = await self._issue(
                conn, owner, old["scope"], old["display_name"], request_id, expires_at, now, kept
            )
            ends = now + timedelta(seconds=overlap_seconds)
            if old["expires_at"] is not None:
                ends = min(ends, old["expires_at"])
            previous = await self._repo.set_key_expiry(conn, owner, key_id, ends)
            await events.publish_key(conn, self._topic, dict(previous))
        return key_message(row), token, key_message(dict(previous))

    async def _claim(
        self, conn: asyncpg.Connection, owner: uuid.UUID | None, tenant_id: str, request_id: str
    ) -> None:
        """Lock the owning tenant (it must exist) and refuse a request id already used."""
        if owner is not None and not await self._repo.lock_tenant(conn, owner):
            raise NotFound("tenant", tenant_id)
        if request_id:
            earlier = await self._repo.get_key_by_request(conn, owner, request_id)
            if earlier is not None:
                # The secret is never stored, so a retry cannot be answered with it again.
                raise AlreadyExists("api_key", earlier["id"])

    async def _issue(
        self,
        conn: asyncpg.Connection,
        owner: uuid.UUID | None,
        scope: int,
        display_name: str,
        request_id: str,
        expires_at: datetime | None,
        now: datetime,
        permissions: frozenset[str] | None,
    ) -> tuple[dict[str, Any], str]:
        """Store and announce a new key; its row and the whole key, shown once."""
        issued = auth.issue_key()
        row = {
            "id": issued.key_id,
            "tenant_id": owner,
            "scope": scope,
            "display_name": display_name,
            "secret_sha256": issued.secret_sha256,
            "request_id": request_id or None,
            "created_at": now,
            "revoked_at": None,
            "expires_at": expires_at,
            "permissions": None if permissions is None else sorted(permissions),
        }
        await self._repo.insert_key(conn, row)
        await events.publish_key(conn, self._topic, row)
        return row, issued.token

    async def audit(self, tenant_id: str, size: int, token: str) -> tuple[list[pb.AuditEntry], str]:
        """A tenant's audit log, oldest first; an admin without a tenant gets the admin keys'."""
        rows, more = await self._paged(tenant_id, "audit", size, token, self._repo.list_audit)
        return [events.audit_message(r) for r in rows], more

    async def list(self, tenant_id: str, size: int, token: str) -> tuple[list[pb.ApiKey], str]:
        """Keys of a tenant, or admin keys when `tenant_id` is empty."""
        rows, more = await self._paged(tenant_id, "api_key", size, token, self._repo.list_keys)
        return [key_message(dict(r)) for r in rows], more

    async def _paged(
        self,
        tenant_id: str,
        noun: str,
        size: int,
        token: str,
        fetch: Callable[
            [asyncpg.Connection, uuid.UUID | None, Page], Awaitable[Sequence[asyncpg.Record]]
        ],
    ) -> tuple[Sequence[asyncpg.Record], str]:
        """One page of a tenant's rows (the admin keys' when `tenant_id` is empty), and the token
        of the next; the token is bound to this tenant and this list."""
        owner = _owner(tenant_id, not tenant_id)
        scope = f"{noun}:{owner}"
        page = parse_page(size, token, scope)
        async with self._pool.acquire() as conn:
            rows = await fetch(conn, owner, page)
        more = next_token(scope, str(rows[-1]["id"])) if len(rows) == page.size else ""
        return rows, more

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
        if row is None or _ended(row, events.now()):
            return None
        if not hmac.compare_digest(row["secret_sha256"], secret_sha256):
            return None
        if row["tenant_id"] is None:
            return auth.Principal(key_id=key_id, tenant_id=None)
        permissions = None if row["permissions"] is None else frozenset(row["permissions"])
        if row["tenant_state"] is None:
            return None  # the tenant is gone
        if row["tenant_state"] != _ACTIVE:
            raise PermissionDenied("the tenant is suspended")
        return auth.Principal(
            key_id=key_id, tenant_id=str(row["tenant_id"]), permissions=permissions
        )
