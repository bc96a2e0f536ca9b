-- A key may stop working at a set time; null keeps it until it is revoked.
alter table api_keys add column expires_at timestamptz;
