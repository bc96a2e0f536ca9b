"""API keys, and the principal a call acts as.

A key looks like `llk_<key id>_<secret>`. Only the SHA-256 of the secret is stored, so a leaked
database does not leak keys; the key id makes the lookup one indexed read.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol

from lianluo.runtime.errors import PermissionDenied, Unauthenticated

KEY_PREFIX = "llk"
ADMIN_BOOTSTRAP_KEY_ID = "bootstrap-admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin (no tenant) or a key of one tenant."""

    key_id: str
    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


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
