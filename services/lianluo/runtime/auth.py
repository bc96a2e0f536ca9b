"""API keys, and the principal a call acts as.

A key looks like `llk_<key id>_<secret>`. Only the SHA-256 of the secret is stored, so a leaked
database does not leak keys; the key id makes the lookup one indexed read.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from lianluo.runtime.errors import PermissionDenied, Unauthenticated

KEY_PREFIX = "llk"
ADMIN_BOOTSTRAP_KEY_ID = "bootstrap-admin"

# What a call may need: each RPC declares one (`needs`), next to its handler. The admin key has
# every permission; a tenant's key has every one but `platform:admin`, unless it was created
# with fewer (an integration's key, such as a widget's that may only start interactions).
PLATFORM = "platform:admin"
PERMISSIONS: dict[str, str] = {
    PLATFORM: "operate the platform across tenants: create, list, suspend, resume and delete "
    "tenants",
    "config:read": "read the tenant's configuration (the tenant, agents, queues, flows, "
    "notification templates and rules), check and simulate flows, find the tenant's cell",
    "config:write": "change the tenant's configuration",
    "keys:read": "list the tenant's API keys",
    "keys:write": "create, rotate and revoke the tenant's API keys",
    "interaction:read": "read interactions",
    "interaction:write": "start interactions, connect to them and send in them, add and remove "
    "media, transfer and end them",
    "routing:read": "read queue figures and recommendations",
    "routing:agent": "set an agent's presence and answer offers",
    "recording:read": "read and export recordings",
    "recording:write": "set legal holds and retention",
    "notification:read": "read deliveries",
    "notification:write": "send notifications and publish business events",
    "audit:read": "read the tenant's audit log: who changed its configuration and keys",
}
_PERMISSION_ATTRIBUTE = "__lianluo_permission__"
F = TypeVar("F", bound=Callable[..., Any])


def needs(permission: str) -> Callable[[F], F]:
    """Declare the permission an RPC handler needs; the server enforces it before the call."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def mark(handler: F) -> F:
        setattr(handler, _PERMISSION_ATTRIBUTE, permission)
        return handler

    return mark


def permission_of(handler: object) -> str | None:
    """The permission a handler declared with `needs`, if any."""
    found = getattr(handler, _PERMISSION_ATTRIBUTE, None)
    return found if isinstance(found, str) else None


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin (no tenant) or a key of one tenant, with what it may do."""

    key_id: str
    tenant_id: str | None
    # None: every permission its kind has; otherwise only these (never `platform:admin`).
    permissions: frozenset[str] | None = None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def may(self, permission: str) -> bool:
        if self.is_admin:
            return True
        if permission == PLATFORM:
            return False
        return self.permissions is None or permission in self.permissions

    def grants(self, permissions: frozenset[str] | None) -> bool:
        """Whether a key with `permissions` would do nothing this principal cannot."""
        if self.is_admin or self.permissions is None:
            return True
        return permissions is not None and permissions <= self.permissions


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    secret: str
    secret_sha256: str

    @property
    def token(self) -> str:
        return f"{KEY_PREFIX}_{self.key_id}_{self.secret}"


class KeyResolver(Protocol):
    """Finds the principal of a key id whose secret hashes to `secret_sha256`, if it is valid."""

    async def resolve(self, key_id: str, secret_sha256: str) -> Principal | None: ...


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "lianluo_principal", default=None
)


@dataclass(frozen=True)
class Call:
    """The RPC being served and the peer that called it, for the audit log."""

    method: str
    peer: str


_call: contextvars.ContextVar[Call | None] = contextvars.ContextVar("lianluo_call", default=None)


def set_call(call: Call | None) -> contextvars.Token[Call | None]:
    return _call.set(call)


def reset_call(token: contextvars.Token[Call | None]) -> None:
    _call.reset(token)


def current_call() -> Call | None:
    """The RPC in progress, if this runs inside one."""
    return _call.get()


def current_principal_or_none() -> Principal | None:
    return _principal.get()


def issue_key() -> IssuedKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(key_id, secret, sha256_hex(secret))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str]:
    """Split a key into (key id, secret); raise Unauthenticated when it is not a key."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        raise Unauthenticated("malformed API key")
    return parts[1], parts[2]


def matches(secret: str, secret_sha256: str) -> bool:
    return hmac.compare_digest(sha256_hex(secret), secret_sha256)


def current_principal() -> Principal:
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("missing API key: send `authorization: Bearer <key>`")
    return principal


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _principal.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _principal.reset(token)


def require_admin() -> Principal:
    principal = current_principal()
    if not principal.is_admin:
        raise PermissionDenied("this call needs an admin key")
    return principal


def require_tenant(tenant_id: str) -> Principal:
    """Allow an admin, or a key of exactly this tenant."""
    principal = current_principal()
    if not principal.is_admin and principal.tenant_id != tenant_id:
        raise PermissionDenied("the API key does not belong to this tenant")
    return principal
