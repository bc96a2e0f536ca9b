-- Tamper evidence: each entry of an interaction's record carries the SHA-256 of the entry
-- stored before it and its own (over that and its content), in the order they were stored;
-- the record keeps the last, its head. Entries stored before this migration have no link:
-- VerifyRecording reports their records as recorded before the chain.
alter table record_entries add column link int;
alter table record_entries add column previous_sha256 bytea;
alter table record_entries add column sha256 bytea;
create unique index record_entries_chain on record_entries (tenant_id, interaction_id, link);
alter table recordings add column head_sha256 bytea;
