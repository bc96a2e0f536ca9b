-- A tenant's recorded prompts, as a phone plays them (one channel, 16-bit, 8 kHz WAV). Read
-- through AudioService only; they are not part of the configuration published on
-- tenant.config, as audio is too large to give every service.
create table audio (
    tenant_id uuid not null,
    -- "C": names page in the same byte order in every database, whatever its locale.
    name text collate "C" not null,
    -- Empty: calls in a language that has no recording of this name.
    language text collate "C" not null,
    wav bytea not null,
    -- Of `wav`, 64 hex digits.
    sha256 text not null,
    duration_ms bigint not null,
    -- Counts the puts of this name and language, for the audit log (the API shows none).
    revision bigint not null,
    updated_at timestamptz not null,
    -- ListAudio pages in (name, language) order.
    primary key (tenant_id, name, language)
);
