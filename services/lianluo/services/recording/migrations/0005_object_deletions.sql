-- Objects of purged records (files, call audio) still to delete from the object store: queued
-- in the purge's transaction, deleted and checked gone by the sweep, then announced as
-- `recording.objects_deleted`. A crash in between only delays them.
create table object_deletions (
    tenant_id text not null,
    interaction_id text not null,
    key text not null,
    queued_at timestamptz not null default now(),
    primary key (tenant_id, key)
);
