"""Credentials, and the principal a call acts as: what it may do, and on whose behalf.

A call carries an API key or a signed token (lianluo.runtime.tokens). A key looks like
`llk_<key id>_<secret>`. Only the SHA-256 of the secret is stored, so a leaked database does not
leak keys; the key id makes the lookup one indexed read. A token names a person of a tenant
(an admin, a supervisor or an agent) or a customer's session.
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
# Declared by the RPCs that take no credential: signing in, where the request is the
# credential, and a tenant's public keys.
PUBLIC = "public"
PERMISSIONS: dict[str, str] = {
    PUBLIC: "nothing: the request is the credential (signing in), or the answer is public",
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
    "audit:read": "read the tenant's audit log: who changed its configuration, people and keys",
    "people:read": "read the tenant's people (users)",
    "people:write": "add, change and remove the tenant's people, set their passwords and end "
    "their sessions",
    "sessions:write": "mint customer session tokens (the channel gateway, an app's backend)",
    "customers:read": "read the tenant's customers, the identities they reached it with and "
    "their conversations on every channel",
    "customers:write": "link a verified identity to a customer (merging the customers it joins)",
    "directory:read": "search the tenant's agents and experts by name, skill or expertise, to "
    "hand a conversation to one",
    "knowledge:read": "read and search the tenant's knowledge base and canned responses",
    "knowledge:write": "add, replace and remove knowledge-base articles and canned responses",
}

# The roles of people and customers, and what each may do. A tenant admin has every permission
# of a tenant's key. The rest hold a few, and their handlers narrow them further to the
# person's own agent, the supervisor's queues or the customer's interaction.
TENANT_ADMIN, SUPERVISOR, AGENT, CUSTOMER = "tenant_admin", "supervisor", "agent", "customer"
ROLE_PERMISSIONS: dict[str, frozenset[str] | None] = {
    TENANT_ADMIN: None,
    # A supervisor also sets the presence of their queues' agents (routing:agent; the ACD
    # narrows it to those agents, and never lets a supervisor answer an offer).
    SUPERVISOR: frozenset(
        {
            "config:read",
            "routing:read",
            "routing:agent",
            "interaction:read",
            "interaction:write",
            "customers:read",
            "knowledge:read",
            "directory:read",
        }
    ),
    # An agent reads who the customer in front of them is and where they wrote before (any
    # customer of the tenant, for now: docs/security.md), and looks up the knowledge base.
    AGENT: frozenset(
        {
            "routing:agent",
            "interaction:read",
            "interaction:write",
            "customers:read",
            "knowledge:read",
            "directory:read",
        }
    ),
    CUSTOMER: frozenset({"interaction:read", "interaction:write"}),
}
_RULE_ATTRIBUTE = "__lianluo_rule__"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Rule:
    """What an RPC declares: the permission it needs, and whether each call publishes an event
    (then it counts against the tenant's events-per-second quota as well)."""

    permission: str
    emits: bool = False


def needs(permission: str, *, emits: bool = False) -> Callable[[F], F]:
    """Declare the permission an RPC handler needs; the server enforces it before the call."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def mark(handler: F) -> F:
        setattr(handler, _RULE_ATTRIBUTE, Rule(permission, emits))
        return handler

    return mark


def rule_of(handler: object) -> Rule | None:
    """What a handler declared with `needs`, if anything."""
    found = getattr(handler, _RULE_ATTRIBUTE, None)
    return found if isinstance(found, Rule) else None


@dataclass(frozen=True)
class Limits:
    """A tenant's quotas (lianluo.runtime.quotas): 0 is no limit."""

    max_concurrent_interactions: int = 0
    max_agents: int = 0
    api_calls_per_second: int = 0
    events_per_second: int = 0


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin (no tenant), or a key, a person or a customer of one tenant,
    with what it may do."""

    # The API key, for a key; empty for a person or a customer.
    key_id: str
    tenant_id: str | None
    # None: every permission its kind has; otherwise only these (never `platform:admin`).
    permissions: frozenset[str] | None = None
    # For a person or a customer: the role (TENANT_ADMIN, SUPERVISOR, AGENT, CUSTOMER).
    role: str = ""
    user_id: str = ""
    # An agent's own agent id; a supervisor's queues.
    agent_id: str = ""
    queues: frozenset[str] = frozenset()
    # A customer's session: one interaction, or one customer on one channel.
    interaction_id: str = ""
    customer_id: str = ""
    channel: int = 0
    limits: Limits = Limits()

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    @property
    def actor(self) -> str:
        """Who this is, for logs: "key:<id>", "user:<id>" or "customer:<id>"."""
        if self.key_id:
            return f"key:{self.key_id}"
        return f"user:{self.user_id}" if self.user_id else f"customer:{self.customer_id}"

    def acts_as_agent(self, agent_id: str) -> bool:
        """Whether this may act as the agent `agent_id`: an agent only as themselves, a
        supervisor or a customer never, a key or a tenant admin as any agent of the tenant."""
        if self.role == AGENT:
            return bool(agent_id) and agent_id == self.agent_id
        return self.role not in (SUPERVISOR, CUSTOMER)

    def watches(self, queue: str) -> bool:
        """Whether this may watch the queue `queue`: a supervisor only their own queues."""
        if self.role == SUPERVISOR:
            return queue in self.queues
        return self.role not in (AGENT, CUSTOMER)

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


class Spender(Protocol):
    def take(self, tenant_id: str, what: str, rate: int) -> None: ...


@dataclass(frozen=True)
class Call:
    """The RPC being served and the peer that called it (for the audit log), and the server's
    rate limiter (for what a stream publishes after its call began)."""

    method: str
    peer: str
    limiter: Spender | None = None


def spend_event() -> None:
    """Count one event the caller publishes inside a long call (a message on a stream)."""
    principal, call = _principal.get(), _call.get()
    if principal is not None and principal.tenant_id and call is not None and call.limiter:
        call.limiter.take(
            principal.tenant_id, "events_per_second", principal.limits.events_per_second
        )


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


def require_agent(agent_id: str) -> Principal:
    """Allow a caller that may act as this agent (an agent only as themselves)."""
    principal = current_principal()
    if not principal.acts_as_agent(agent_id):
        raise PermissionDenied("an agent acts only as themselves")
    return principal


def require_tenant(tenant_id: str) -> Principal:
    """Allow an admin, or a key of exactly this tenant."""
    principal = current_principal()
    if not principal.is_admin and principal.tenant_id != tenant_id:
        raise PermissionDenied("the API key does not belong to this tenant")
    return principal
