-- When each entry was stored: a tenant's daily root covers the entries stored that day (UTC).
alter table record_entries add column stored_at timestamptz not null default now();
create index record_entries_by_day on record_entries (tenant_id, stored_at);

-- The roots published on recording.event, with their leaves (one per record with entries
-- stored that day: [interaction id, last link that day, that entry's hex SHA-256]), so that
-- VerifyRecording can say which roots hold a record as it is now.
create table daily_roots (
    tenant_id text not null,
    day date not null,
    root_sha256 bytea not null,
    leaves jsonb not null,
    published_at timestamptz not null default now(),
    primary key (tenant_id, day)
);
