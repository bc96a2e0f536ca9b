-- One row per interaction the IVR has seen: the flow it runs (the document itself, so a run
-- keeps the version it started with even when the tenant publishes a new one), the engine's
-- state, and when the prompt it waits on times out.
create table runs (
    tenant_id text not null,
    interaction_id text not null,
    flow_name text not null default '',
    flow bytea,
    channel integer not null default 0,
    media integer not null default 0,
    language text not null default '',
    customer_id text not null default '',
    customer_attributes jsonb not null default '{}',
    -- new, waiting, routed, ended (the flow finished) or closed (the interaction ended first).
    status text not null,
    node_id text not null default '',
    variables jsonb not null default '{}',
    retries_left integer not null default 0,
    prompt_count integer not null default 0,
    intent_confidence double precision not null default 0,
    timeout_seconds integer not null default 0,
    deadline timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, interaction_id)
);

-- The timeout sweeper reads only runs that wait, oldest deadline first.
create index runs_deadline on runs (deadline) where status = 'waiting';
