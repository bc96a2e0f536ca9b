-- The words of each record's messages and closing note, for ListRecordings' `text`: cut and
-- stemmed by the service (lianluo.domain.words), stored with the 'simple' configuration, which
-- changes nothing but case.
alter table recordings add column words tsvector not null default ''::tsvector;
create index recordings_words on recordings using gin (words);
-- The other filters of a search.
create index recordings_by_queue on recordings (tenant_id, queue, start_time desc);
create index recordings_by_resolution on recordings (tenant_id, resolution_code, start_time desc);
