-- People who log in are `user` resources (in `resources`, published on tenant.config); what
-- must never leave this service is here: password hashes, lockouts, refresh tokens and the
-- private halves of the tenants' signing keys.
create table credentials (
    tenant_id uuid not null,
    user_id uuid not null,
    -- argon2id, in its PHC string form; null until a password is set.
    password_hash text,
    failed_logins integer not null default 0,
    locked_until timestamptz,
    primary key (tenant_id, user_id)
);

-- The SHA-256 of each refresh token's secret; a used token is revoked (tokens rotate).
create table refresh_tokens (
    id text primary key,
    tenant_id uuid not null,
    user_id uuid not null,
    secret_sha256 text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz
);
create index refresh_tokens_user on refresh_tokens (tenant_id, user_id) where revoked_at is null;

create table signing_keys (
    tenant_id uuid not null,
    kid text not null,
    private_pem bytea not null,
    jwk text not null,
    created_at timestamptz not null default now(),
    retire_at timestamptz,
    primary key (tenant_id, kid)
);

alter table audit_log add column user_id text not null default '';
-- Logins find people by name; the exchange of an external ID token by its subject.
create index resources_external_subject on resources (tenant_id, (spec->>'external_subject'))
    where kind = 'user';
