"""Signed tokens, and the principal behind any credential: a key, a person, or a customer.

A person's access token and a customer's session token are JWTs signed with EdDSA (Ed25519)
by a signing key of their tenant. The tenants service holds the private halves; the public
halves travel on `tenant.config` with the tenant's people, so every service verifies a token on
its own, and a disabled person, an ended session or a retired key is refused everywhere as soon
as the change arrives. Access tokens are short-lived (ACCESS_TOKEN_SECONDS), so even a service
cut off from `tenant.config` stops honouring one soon.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from lianluo.runtime import auth, quotas
from lianluo.runtime.errors import PermissionDenied, Unauthenticated
from lianluo.tenants.v1 import tenants_pb2 as pb

ISSUER = AUDIENCE = "lianluo"
ALGORITHM = "EdDSA"
ACCESS_TOKEN_SECONDS = 300
REFRESH_TOKEN_SECONDS = 12 * 3600
CUSTOMER_TOKEN_SECONDS = 900
MAX_CUSTOMER_TOKEN_SECONDS = 3600
# Clocks of the services may differ this much.
LEEWAY_SECONDS = 5
PERSON, CUSTOMER = "person", "customer"
ROLES = {
    pb.ROLE_TENANT_ADMIN: auth.TENANT_ADMIN,
    pb.ROLE_SUPERVISOR: auth.SUPERVISOR,
    pb.ROLE_AGENT: auth.AGENT,
}
_ACTIVE = pb.TENANT_STATE_ACTIVE


@dataclass(frozen=True)
class SigningKey:
    kid: str
    # The public key as a JWK (JSON text).
    jwk: str
    retire_time: datetime | None = None
    # PEM of the private key; only the tenants service has it.
    private_pem: bytes = b""

    def retired(self, now: datetime) -> bool:
        return self.retire_time is not None and self.retire_time <= now


def new_signing_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = secrets.token_hex(8)
    public = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    public.update(kid=kid, use="sig", alg=ALGORITHM)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey(kid, json.dumps(public, sort_keys=True), None, pem)


def mint(
    key: SigningKey,
    tenant_id: str,
    kind: str,
    subject: str,
    lifetime: timedelta,
    now: datetime,
    **claims: Any,
) -> tuple[str, datetime]:
    """A token of `kind` (PERSON or CUSTOMER) for `subject`, and when it expires."""
    expires = now + lifetime
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "tid": tenant_id,
        "typ": kind,
        # Fractional seconds: a session ended in this second must not let an earlier token by.
        "iat": round(now.timestamp(), 3),
        "exp": int(expires.timestamp()),
        "jti": secrets.token_hex(8),
        **claims,
    }
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    token = jwt.encode(payload, private, algorithm=ALGORITHM, headers={"kid": key.kid})  # type: ignore[arg-type]
    return token, expires


def is_token(bearer: str) -> bool:
    """A JWT (three dot-separated parts) rather than an API key."""
    return bearer.count(".") == 2


def _unverified(token: str) -> tuple[str, str]:
    """The key id and tenant a token names, to find the key that must verify it."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        tenant_id = jwt.decode(token, options={"verify_signature": False}).get("tid")
    except jwt.PyJWTError as error:
        raise Unauthenticated("malformed token") from error
    if not isinstance(kid, str) or not isinstance(tenant_id, str) or not kid or not tenant_id:
        raise Unauthenticated("malformed token: no kid or tenant")
    return kid, tenant_id


def verify(token: str, key: SigningKey) -> dict[str, Any]:
    """The claims of a token that `key` signed and that has not expired."""
    try:
        public = OKPAlgorithm.from_jwk(key.jwk)
        claims: dict[str, Any] = jwt.decode(
            token,
            public,  # type: ignore[arg-type]
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "tid", "typ"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise Unauthenticated("the token has expired: refresh it or sign in again") from error
    except jwt.PyJWTError as error:
        raise Unauthenticated("the token is not valid") from error
    return claims


class TokenSource(Protocol):
    """Where a service finds a tenant, its signing keys and its people."""

    async def lookup_tenant(self, tenant_id: str) -> pb.Tenant | None: ...

    async def signing_key(self, tenant_id: str, kid: str) -> SigningKey | None: ...

    async def user(self, tenant_id: str, user_id: str) -> pb.User | None: ...


class Credentials(auth.KeyResolver, TokenSource, Protocol):
    """What a server checks keys and tokens against: the tenants service's own tables, or
    another service's copy of `tenant.config`."""


def of_tenant(tenant: pb.Tenant | None, **fields: Any) -> auth.Principal | None:
    """The principal of a tenant's credential, with the tenant's quotas; None when the tenant
    is gone; PERMISSION_DENIED when it is suspended."""
    if tenant is None:
        return None
    if tenant.state != _ACTIVE:
        raise PermissionDenied("the tenant is suspended")
    return auth.Principal(tenant_id=tenant.id, limits=quotas.of(tenant), **fields)


async def authenticate(token: str, source: TokenSource) -> auth.Principal | None:
    """The principal of a signed token; None (refused) when its key, tenant or person is
    unknown, retired, disabled or signed out since."""
    kid, tenant_id = _unverified(token)
    key = await source.signing_key(tenant_id, kid)
    now = datetime.now(UTC)
    if key is None or key.retired(now):
        return None
    claims = verify(token, key)
    tenant = await source.lookup_tenant(tenant_id)
    if claims["typ"] == CUSTOMER:
        return of_tenant(
            tenant,
            key_id="",
            permissions=auth.ROLE_PERMISSIONS[auth.CUSTOMER],
            role=auth.CUSTOMER,
            interaction_id=str(claims.get("ixn", "")),
            customer_id=str(claims.get("cid", "")),
            channel=int(claims.get("chn", 0)),
        )
    if claims["typ"] != PERSON:
        return None
    user = await source.user(tenant_id, str(claims["sub"]))
    if user is None or user.disabled or user.role not in ROLES:
        return None
    if user.HasField("sessions_end_time") and float(claims["iat"]) < (
        user.sessions_end_time.ToDatetime(UTC).timestamp()
    ):
        return None
    role = ROLES[user.role]
    return of_tenant(
        tenant,
        key_id="",
        permissions=auth.ROLE_PERMISSIONS[role],
        role=role,
        user_id=user.id,
        agent_id=user.agent_id if role == auth.AGENT else "",
        queues=frozenset(user.queues) if role == auth.SUPERVISOR else frozenset(),
    )


def jwks(keys: list[SigningKey], now: datetime) -> str:
    """The JSON Web Key Set of the keys that still verify."""
    return json.dumps({"keys": [json.loads(k.jwk) for k in keys if not k.retired(now)]})
