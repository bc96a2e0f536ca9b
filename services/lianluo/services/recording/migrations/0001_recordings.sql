-- One row per interaction: the summary that ListRecordings filters and pages over. Ids are
-- text because they arrive in events from other services and must be stored as published.
create table recordings (
    tenant_id text not null,
    interaction_id text not null,
    channel int not null default 0,
    customer_id text not null default '',
    -- Every agent and expert who joined, in the order they joined.
    agent_ids text[] not null default '{}',
    queue text not null default '',
    state int not null default 0,
    resolution_code text not null default '',
    resolution_note text not null default '',
    start_time timestamptz not null,
    end_time timestamptz,
    complete boolean not null default false,
    entry_count int not null default 0,
    media_count int not null default 0,
    retain_until timestamptz,
    -- Set by SetRetention; the default retention applied at the end then leaves it alone.
    retention_explicit boolean not null default false,
    legal_hold boolean not null default false,
    legal_hold_reason text not null default '',
    legal_hold_time timestamptz,
    updated_at timestamptz not null default now(),
    primary key (tenant_id, interaction_id)
);
-- Newest first, the order of ListRecordings.
create index recordings_by_start on recordings (tenant_id, start_time desc, interaction_id desc);
create index recordings_by_customer
    on recordings (tenant_id, customer_id, start_time desc, interaction_id desc);
create index recordings_by_agent on recordings using gin (agent_ids);
-- What the retention sweep looks at.
create index recordings_expiring on recordings (retain_until) where not legal_hold;

-- Every event of an interaction, exactly as published (the serialized Envelope).
create table record_entries (
    tenant_id text not null,
    interaction_id text not null,
    event_id text not null,
    topic text not null,
    event_type text not null,
    -- The timeline sequence when the payload has one (interaction.event), else null.
    sequence bigint,
    occur_time timestamptz not null,
    -- Arrival order, so entries with equal keys keep the order they were consumed in.
    arrival bigserial not null,
    envelope bytea not null,
    primary key (tenant_id, interaction_id, event_id)
);

-- Files, images and recorded legs; `item` is the MediaItem as JSON, merged as legs end.
create table media_items (
    tenant_id text not null,
    interaction_id text not null,
    id text not null,
    item jsonb not null,
    arrival bigserial not null,
    primary key (tenant_id, interaction_id, id)
);
