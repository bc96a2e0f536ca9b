-- E-mail threads: every Message-ID seen or sent, and the interaction it belongs to, so a reply
-- (In-Reply-To, References) continues its interaction.
create table mail_messages (
    tenant_id uuid not null,
    message_id text not null,
    interaction_id uuid not null,
    primary key (tenant_id, message_id)
);

-- The interactions that started by e-mail: where replies go and how they thread.
create table mail_interactions (
    tenant_id uuid not null,
    interaction_id uuid not null,
    channel_id uuid not null,
    customer_address text not null,
    customer_participant text not null,
    subject text not null,
    -- The thread so far, oldest first: what a reply's References carries.
    thread text[] not null,
    primary key (tenant_id, interaction_id)
);

-- Agents' replies waiting to go out through the relay, retried until they do.
create table mail_outbox (
    tenant_id uuid not null,
    id uuid not null,
    interaction_id uuid not null,
    body text not null,
    attempts integer not null default 0,
    due_at timestamptz not null default now(),
    last_error text not null default '',
    primary key (tenant_id, id)
);
create index mail_outbox_due on mail_outbox (due_at);
