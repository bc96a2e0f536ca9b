-- Routing state per tenant. Only the replica that owns the tenant's partition writes the first
-- four tables; a new owner after a rebalance rebuilds its state from them.

-- Presence, session capacity limits and idle times; an agent without a row is offline.
create table agents (
    tenant_id uuid not null,
    agent_id text not null,
    presence smallint not null,
    reason text not null default '',
    -- {"<media number>": max_concurrent}: limits set by SetPresence below the configured capacity.
    limits jsonb not null default '{}',
    change_time timestamptz,
    last_idle_time timestamptz,
    last_assign_time timestamptz,
    primary key (tenant_id, agent_id)
);

-- Waiting contacts. Needs, deadline and overflow are fixed when the contact enters the queue.
create table contacts (
    tenant_id uuid not null,
    interaction_id text not null,
    queue text not null,
    -- lianluo.common.v1.RoutingRequirements
    requirements bytea not null,
    -- {"media", "skills", "language", "priority"}
    needs jsonb not null,
    enqueued_at timestamptz not null,
    deadline timestamptz not null,
    -- lianluo.tenants.v1.Overflow
    overflow bytea not null,
    declined text[] not null default '{}',
    offer_id uuid,
    primary key (tenant_id, interaction_id)
);

-- Every offer ever made; pending ones reserve the agent's capacity.
create table offers (
    tenant_id uuid not null,
    id uuid not null,
    interaction_id text not null,
    agent_id text not null,
    state smallint not null,
    media smallint not null,
    expire_time timestamptz not null,
    -- lianluo.acd.v1.Offer and the lianluo.acd.v1.RoutingExplanation behind it
    offer bytea not null,
    explanation bytea not null,
    primary key (tenant_id, id)
);
create index offers_pending on offers (tenant_id, expire_time) where state = 1;

-- Interactions agents hold: the capacity in use.
create table assignments (
    tenant_id uuid not null,
    interaction_id text not null,
    agent_id text not null,
    media smallint not null,
    offer_id uuid not null,
    assigned_at timestamptz not null,
    primary key (tenant_id, interaction_id, agent_id)
);

-- Answers received by RespondToOffer on any replica and published on agent.event. Not routing
-- state: it makes a repeated answer idempotent and lets the owner wait for an answer given
-- just before expiry instead of timing the offer out.
create table offer_answers (
    tenant_id uuid not null,
    offer_id uuid not null,
    agent_id text not null,
    accept boolean not null,
    reason text not null default '',
    answered_at timestamptz not null,
    primary key (tenant_id, offer_id)
);
