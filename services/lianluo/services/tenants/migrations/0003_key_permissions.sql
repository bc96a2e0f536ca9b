-- What a key may do; null: everything a key of its kind may do.
alter table api_keys add column permissions text[];
