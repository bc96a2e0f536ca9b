-- An export's bundle is deleted once its links have expired: queued with the time it is due.
alter table object_deletions add column due_at timestamptz not null default now();
create index object_deletions_due on object_deletions (due_at);
