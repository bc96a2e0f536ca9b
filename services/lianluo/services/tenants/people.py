"""Signing in: passwords, lockouts, access and refresh tokens, OpenID Connect, customers'
session tokens; and the credentials the tenants service checks its own calls against.

Passwords are argon2id hashes, checked in a worker thread so a login never holds the event
loop. Logins are rate-limited per tenant and a person is locked out after MAX_FAILED_LOGINS
wrong passwords in a row, so guessing costs the guesser, not the other tenants.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from lianluo.common.v1 import common_pb2
from lianluo.runtime import auth, quotas, tokens
from lianluo.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Violations,
)
from lianluo.services.tenants import domain, events, signing
from lianluo.services.tenants.domain import TENANT, USER
from lianluo.services.tenants.keys import ApiKeys
from lianluo.services.tenants.repository import Repository, parse_id
from lianluo.services.tenants.service import TenantsService, scoped_tenant
from lianluo.tenants.v1 import tenants_pb2 as pb

REFRESH_PREFIX = "llr"
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
# Sign-ins (logins, refreshes, exchanges) per second per tenant, on each replica.
SIGN_INS_PER_SECOND = 20
WRONG = "wrong tenant, name or password"
_HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106) parameters
# Checked when the name is unknown, so a wrong name costs as long as a wrong password.
_DECOY = _HASHER.hash("not a password of anyone")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class People:
    """People's passwords and sessions, and tokens; the tenants service's Credentials."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        config_topic: str,
        tenants: TenantsService,
        keys: ApiKeys,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._topic = config_topic
        self._tenants = tenants
        self._keys = keys
        self._limiter = quotas.RateLimiter()
        self._jwks_clients: dict[str, jwt.PyJWKClient] = {}

    # ------------------------------------------------------------------ people (admin side)

    async def create_user(
        self, tenant_id: str, user: pb.User, request_id: str, password: str
    ) -> pb.User:
        hashed = None
        if password:
            domain.validate_password(password)
            hashed = await asyncio.to_thread(_HASHER.hash, password)

        async def store_password(conn: asyncpg.Connection, new: pb.User) -> None:
            if hashed is not None:
                await self._repo.set_credentials(
                    conn, uuid.UUID(new.tenant_id), uuid.UUID(new.id), password_hash=hashed
                )

        created = await self._tenants.create(tenant_id, USER, user, request_id, store_password)
        assert isinstance(created, pb.User)
        return created

    async def set_password(self, tenant_id: str, user_id: str, password: str) -> pb.User:
        domain.validate_password(password)
        hashed = await asyncio.to_thread(_HASHER.hash, password)
        return await self._end_sessions(tenant_id, user_id, hashed)

    async def end_sessions(self, tenant_id: str, user_id: str) -> pb.User:
        return await self._end_sessions(tenant_id, user_id, None)

    async def _end_sessions(
        self, tenant_id: str, user_id: str, password_hash: str | None
    ) -> pb.User:
        """End every session of a person (and set their password, when given): their refresh
        tokens are revoked here, and every service refuses access tokens issued before now."""
        tid = scoped_tenant(tenant_id)
        uid = parse_id(user_id, "user_id")
        async with self._pool.acquire() as conn, conn.transaction():
            user = (
                None if uid is None else await self._repo.get(conn, tid, USER, uid, for_update=True)
            )
            if not isinstance(user, pb.User) or uid is None:
                raise NotFound("user", user_id)
            if password_hash is not None:
                await self._repo.set_credentials(conn, tid, uid, password_hash=password_hash)
            await self._close_sessions(conn, tid, user, events.now())
        return user

    # ------------------------------------------------------------------ signing in

    async def login(self, tenant_name: str, name: str, password: str) -> pb.Tokens:
        v = Violations()
        v.check(bool(tenant_name), "tenant", "must be set")
        v.check(bool(name), "name", "must be set")
        v.check(bool(password), "password", "must be set")
        v.raise_if_any()
        self._limiter.take(tenant_name, "sign_ins_per_second", SIGN_INS_PER_SECOND)
        async with self._pool.acquire() as conn:
            tenant = await self._repo.tenant_by_name(conn, tenant_name)
            user = None
            if isinstance(tenant, pb.Tenant):
                user = await self._repo.get_by_name(conn, uuid.UUID(tenant.id), USER, name)
            if not isinstance(tenant, pb.Tenant) or not isinstance(user, pb.User):
                await asyncio.to_thread(_verify, _DECOY, password)
                raise Unauthenticated(WRONG)
            tid, uid = uuid.UUID(tenant.id), uuid.UUID(user.id)
            async with conn.transaction():
                stored = await self._repo.credentials(conn, tid, uid)
                now = events.now()
                if stored is not None and stored["locked_until"] and stored["locked_until"] > now:
                    raise ResourceExhausted(
                        f"users/{user.id}",
                        "failed_logins",
                        "too many wrong passwords: the person is locked out for a while",
                        (stored["locked_until"] - now).total_seconds(),
                    )
                hashed = stored["password_hash"] if stored is not None else None
                ok = await asyncio.to_thread(_verify, hashed or _DECOY, password) and bool(hashed)
                if not ok:
                    failed = (stored["failed_logins"] if stored is not None else 0) + 1
                    locked = now + LOCKOUT if failed >= MAX_FAILED_LOGINS else None
                    await self._repo.set_credentials(
                        conn, tid, uid, failed_logins=0 if locked else failed, locked_until=locked
                    )
            if not ok:
                raise Unauthenticated(WRONG)
            async with conn.transaction():
                await self._repo.set_credentials(conn, tid, uid)
                return await self._issue(conn, tenant, user)

    async def refresh(self, refresh_token: str) -> pb.Tokens:
        token_id, secret = self._parse_refresh(refresh_token)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._repo.refresh_token(conn, token_id)
            if row is None or not auth.matches(secret, row["secret_sha256"]):
                raise Unauthenticated("unknown refresh token")
            tid, uid = row["tenant_id"], row["user_id"]
            self._limiter.take(str(tid), "sign_ins_per_second", SIGN_INS_PER_SECOND)
            now = events.now()
            if row["revoked_at"] is None:
                if row["expires_at"] <= now:
                    raise Unauthenticated("the refresh token has expired: sign in again")
                tenant = await self._repo.get(conn, tid, TENANT, tid)
                user = await self._repo.get(conn, tid, USER, uid)
                if not isinstance(tenant, pb.Tenant) or not isinstance(user, pb.User):
                    raise Unauthenticated("unknown refresh token")
                await self._repo.revoke_refresh(conn, tid, uid, now, token_id)
                return await self._issue(conn, tenant, user)
            # A used refresh token again: someone copied it. End every session of the
            # person; the refusal comes after the commit.
            user = await self._repo.get(conn, tid, USER, uid, for_update=True)
            if isinstance(user, pb.User):
                await self._close_sessions(conn, tid, user, now)
        raise Unauthenticated(
            "the refresh token was used already: every session of the person has ended"
        )

    async def logout(self, refresh_token: str) -> None:
        token_id, secret = self._parse_refresh(refresh_token)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._repo.refresh_token(conn, token_id)
            if row is None or not auth.matches(secret, row["secret_sha256"]):
                raise Unauthenticated("unknown refresh token")
            await self._repo.revoke_refresh(
                conn, row["tenant_id"], row["user_id"], events.now(), token_id
            )

    async def exchange(self, tenant_name: str, id_token: str) -> pb.Tokens:
        """An ID token of the tenant's OpenID Connect issuer for tokens of the person it names."""
        v = Violations()
        v.check(bool(tenant_name), "tenant", "must be set")
        v.check(bool(id_token), "id_token", "must be set")
        v.raise_if_any()
        self._limiter.take(tenant_name, "sign_ins_per_second", SIGN_INS_PER_SECOND)
        async with self._pool.acquire() as conn:
            tenant = await self._repo.tenant_by_name(conn, tenant_name)
        if not isinstance(tenant, pb.Tenant):
            raise Unauthenticated("unknown tenant")
        if not tenant.HasField("oidc"):
            raise FailedPrecondition(
                f"tenants/{tenant.name}", "the tenant trusts no OpenID Connect issuer (oidc)"
            )
        claims = await self._verify_id_token(tenant.oidc, id_token)
        async with self._pool.acquire() as conn, conn.transaction():
            user = await self._repo.user_by_subject(conn, uuid.UUID(tenant.id), str(claims["sub"]))
            if not isinstance(user, pb.User):
                raise PermissionDenied("no person of the tenant has this external subject")
            return await self._issue(conn, tenant, user)

    async def _verify_id_token(self, oidc: pb.OidcIssuer, id_token: str) -> dict[str, Any]:
        client = self._jwks_clients.get(oidc.jwks_uri)
        if client is None:
            # The issuer's keys are cached for five minutes; an unknown kid fetches them again.
            client = jwt.PyJWKClient(oidc.jwks_uri, lifespan=300, timeout=5)
            self._jwks_clients[oidc.jwks_uri] = client
        try:
            key = await asyncio.to_thread(client.get_signing_key_from_jwt, id_token)
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=["RS256", "ES256", "EdDSA"],
                audience=oidc.audience,
                issuer=oidc.issuer,
                leeway=tokens.LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as error:
            raise FailedPrecondition(
                "oidc.jwks_uri", "the issuer's keys could not be fetched; try again"
            ) from error
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"the ID token is not valid: {error}") from error
        return claims

    async def _issue(self, conn: asyncpg.Connection, tenant: pb.Tenant, user: pb.User) -> pb.Tokens:
        """Access and refresh tokens for an active person of an active tenant."""
        if tenant.state != pb.TENANT_STATE_ACTIVE:
            raise PermissionDenied("the tenant is suspended")
        if user.disabled:
            raise PermissionDenied("the person is disabled")
        now = events.now()
        tid = uuid.UUID(tenant.id)
        lifetime = timedelta(seconds=tokens.ACCESS_TOKEN_SECONDS)
        key = await signing.signer(conn, self._repo, self._topic, tid, now, lifetime)
        access, access_expires = tokens.mint(key, tenant.id, tokens.PERSON, user.id, lifetime, now)
        issued = auth.issue_key()
        refresh_expires = now + timedelta(seconds=tokens.REFRESH_TOKEN_SECONDS)
        await self._repo.insert_refresh(
            conn,
            {
                "id": issued.key_id,
                "tenant_id": tid,
                "user_id": uuid.UUID(user.id),
                "secret_sha256": issued.secret_sha256,
                "created_at": now,
                "expires_at": refresh_expires,
            },
        )
        out = pb.Tokens(
            access_token=access,
            refresh_token=f"{REFRESH_PREFIX}_{issued.key_id}_{issued.secret}",
            user=user,
        )
        out.access_expire_time.FromDatetime(access_expires)
        out.refresh_expire_time.FromDatetime(refresh_expires)
        return out

    async def _close_sessions(
        self, conn: asyncpg.Connection, tid: uuid.UUID, user: pb.User, now: datetime
    ) -> None:
        """Revoke a (locked) person's refresh tokens and announce that tokens issued before
        `now` are void."""
        await self._repo.revoke_refresh(conn, tid, uuid.UUID(user.id), now)
        user.sessions_end_time.FromDatetime(now)
        user.revision += 1
        user.update_time.FromDatetime(now)
        await self._repo.replace(conn, tid, USER, uuid.UUID(user.id), user.revision, user, now)
        await events.publish_change(
            conn,
            self._topic,
            tenant_id=str(tid),
            kind=USER.name,
            resource_id=user.id,
            revision=user.revision,
            resource=user,
        )

    @staticmethod
    def _parse_refresh(refresh_token: str) -> tuple[str, str]:
        parts = refresh_token.split("_", 2)
        if len(parts) != 3 or parts[0] != REFRESH_PREFIX or not parts[1] or not parts[2]:
            raise InvalidArgument([FieldViolation("refresh_token", "not a refresh token")])
        return parts[1], parts[2]

    # ------------------------------------------------------------------ customers and keys

    async def customer_session(self, req: pb.CreateCustomerSessionRequest) -> pb.CustomerSession:
        tid = scoped_tenant(req.tenant_id)
        v = Violations()
        bound_to_interaction = bool(req.interaction_id)
        if bound_to_interaction:
            v.check(
                parse_id(req.interaction_id, "interaction_id") is not None,
                "interaction_id",
                "must be an interaction id",
            )
            v.check(not req.customer_id, "customer_id", "bind to an interaction or a customer")
        else:
            v.check(bool(req.customer_id), "customer_id", "or interaction_id must be set")
            v.check(
                req.channel != common_pb2.CHANNEL_UNSPECIFIED,
                "channel",
                "must be set with a customer",
            )
        lifetime = req.lifetime_seconds or tokens.CUSTOMER_TOKEN_SECONDS
        v.check(
            60 <= lifetime <= tokens.MAX_CUSTOMER_TOKEN_SECONDS,
            "lifetime_seconds",
            f"60 to {tokens.MAX_CUSTOMER_TOKEN_SECONDS}",
        )
        v.raise_if_any()
        claims: dict[str, Any] = (
            {"ixn": req.interaction_id}
            if bound_to_interaction
            else {"cid": req.customer_id, "chn": int(req.channel)}
        )
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._repo.lock_tenant(conn, tid):
                raise NotFound("tenant", req.tenant_id)
            now = events.now()
            key = await signing.signer(
                conn, self._repo, self._topic, tid, now, timedelta(seconds=lifetime)
            )
        token, expires = tokens.mint(
            key,
            str(tid),
            tokens.CUSTOMER,
            req.customer_id or req.interaction_id,
            timedelta(seconds=lifetime),
            now,
            **claims,
        )
        out = pb.CustomerSession(token=token)
        out.expire_time.FromDatetime(expires)
        return out

    async def jwks(self, tenant_id: str) -> pb.Jwks:
        tid = parse_id(tenant_id, "tenant_id")
        async with self._pool.acquire() as conn:
            rows = [] if tid is None else await self._repo.signing_keys(conn, tid)
        if not rows:
            raise NotFound("tenant", tenant_id)
        return pb.Jwks(json=tokens.jwks([signing.key_of(r) for r in rows], events.now()))

    async def rotate_signing_key(self, tenant_id: str, overlap_seconds: int) -> pb.Jwks:
        tid = scoped_tenant(tenant_id)
        if not 0 <= overlap_seconds <= 3600:
            raise InvalidArgument([FieldViolation("overlap_seconds", "0 to 3600")])
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._repo.lock_tenant(conn, tid):
                raise NotFound("tenant", tenant_id)
            now = events.now()
            await signing.rotate(
                conn, self._repo, self._topic, tid, timedelta(seconds=overlap_seconds), now
            )
            rows = await self._repo.signing_keys(conn, tid)
        return pb.Jwks(json=tokens.jwks([signing.key_of(r) for r in rows], now))

    # ------------------------------------------------------------------ Credentials

    async def resolve(self, key_id: str, secret_sha256: str) -> auth.Principal | None:
        return await self._keys.resolve(key_id, secret_sha256)

    async def lookup_tenant(self, tenant_id: str) -> pb.Tenant | None:
        tid = parse_id(tenant_id, "tenant_id")
        async with self._pool.acquire() as conn:
            found = None if tid is None else await self._repo.get(conn, tid, TENANT, tid)
        return found if isinstance(found, pb.Tenant) else None

    async def signing_key(self, tenant_id: str, kid: str) -> tokens.SigningKey | None:
        tid = parse_id(tenant_id, "tenant_id")
        async with self._pool.acquire() as conn:
            rows = [] if tid is None else await self._repo.signing_keys(conn, tid)
        found = next((r for r in rows if r["kid"] == kid), None)
        return None if found is None else signing.key_of(found)

    async def user(self, tenant_id: str, user_id: str) -> pb.User | None:
        tid, uid = parse_id(tenant_id, "tenant_id"), parse_id(user_id, "user_id")
        async with self._pool.acquire() as conn:
            found = (
                None if tid is None or uid is None else await self._repo.get(conn, tid, USER, uid)
            )
        return found if isinstance(found, pb.User) else None
