-- The interactions not yet ended, counted against the tenant's max_concurrent_interactions
-- at every start (closed, abandoned and overflowed are the ended states).
create index interactions_open on interactions (tenant_id) where state not in (7, 8, 9);
