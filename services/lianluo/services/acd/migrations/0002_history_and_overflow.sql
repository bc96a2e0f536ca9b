-- What happened to contacts and agents, for the queue figures (QueueStats). Append-only; the
-- owner writes it in the same transaction as the routing state it describes.

-- One step of a contact in a queue: entered, answered, abandoned, overflowed; and ended (the
-- end of an answered interaction, which names the agent but not the queue).
create table contact_log (
    tenant_id uuid not null,
    interaction_id text not null,
    queue text not null,
    event text not null,
    at timestamptz not null,
    agent_id text not null default ''
);
create index contact_log_time on contact_log (tenant_id, at);
create index contact_log_interaction on contact_log (tenant_id, interaction_id);

-- An agent's presence from `at` on, for occupancy.
create table presence_log (
    tenant_id uuid not null,
    agent_id text not null,
    presence smallint not null,
    at timestamptz not null
);
create index presence_log_time on presence_log (tenant_id, agent_id, at);

-- Overflow and transfers: a callback waits out of line until `not_before`; the queues whose
-- overflow a contact took already (each is taken once); the agent who transferred it, who
-- leaves once another accepts unless they `stay`.
alter table contacts
    add column not_before timestamptz,
    add column overflowed_from text[] not null default '{}',
    add column transferred_by text not null default '',
    add column stay boolean not null default false;

-- A fresh token per committed routing step of a tenant. The owner keeps the tenant's state in
-- memory between steps while the stored token is the one it wrote last; any other writer (a
-- replica that owned the tenant during a rebalance) or a step that did not commit changes it,
-- and the owner loads the state from the tables again.
create table routing_tokens (
    tenant_id uuid primary key,
    token uuid not null
);
