-- The transactional outbox: rows written in the same transaction as the change they announce,
-- published to Kafka by the relay, then deleted.
create table outbox (
    id bigserial primary key,
    topic text not null,
    record_key bytea not null,
    partition_key bytea not null,
    value bytea not null,
    headers jsonb not null default '[]',
    created_at timestamptz not null default now()
);

-- Event ids each consumer has applied, written in the same transaction as the effect,
-- so a redelivered event is recognised and skipped.
create table inbox (
    consumer text not null,
    event_id text not null,
    applied_at timestamptz not null default now(),
    primary key (consumer, event_id)
);
