-- One row per interaction: the API message as JSON (participants and media legs included)
-- and the columns needed to find and lock it. Every change locks this row, so the
-- interaction's timeline gets one order.
create table interactions (
    tenant_id uuid not null,
    id uuid not null,
    state smallint not null,
    doc jsonb not null,
    last_sequence bigint not null default 0,
    request_id text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, id)
);
create unique index interactions_request_key on interactions (tenant_id, request_id)
    where request_id is not null;

-- Every item of every timeline, exactly as streamed (a ServerFrame), for replay on (re)join.
create table timeline (
    tenant_id uuid not null,
    interaction_id uuid not null,
    sequence bigint not null,
    frame bytea not null,
    staff_only boolean not null default false,
    created_at timestamptz not null default now(),
    primary key (tenant_id, interaction_id, sequence)
);

-- A message resent with the same client id is stored once.
create table client_messages (
    tenant_id uuid not null,
    interaction_id uuid not null,
    participant_id text not null,
    client_message_id text not null,
    sequence bigint not null,
    primary key (tenant_id, interaction_id, participant_id, client_message_id)
);

-- Offers shown on agents' desks, replayed when a desk reconnects while they are pending.
create table offers (
    tenant_id uuid not null,
    id text not null,
    agent_id text not null,
    interaction_id uuid not null,
    frame bytea not null,
    pending boolean not null default true,
    primary key (tenant_id, id)
);
create index offers_pending on offers (tenant_id, agent_id) where pending;
