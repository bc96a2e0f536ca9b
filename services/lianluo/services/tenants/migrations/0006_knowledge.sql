-- A tenant's knowledge base: articles its agents search while they help a customer, and canned
-- responses they insert by a shortcut. Read through KnowledgeService only; they are not part
-- of the configuration published on tenant.config.
create table knowledge_articles (
    tenant_id uuid not null,
    id uuid not null,
    title text not null,
    body text not null,
    -- "zh" or "en", detected from the text when the writer left it empty.
    language text not null,
    tags text[] not null default '{}',
    revision bigint not null,
    request_id text,
    -- The title and tags (weight A) and the body (weight B) as words: Chinese segmented by jieba
    -- and English stemmed, by the service (tenants/knowledge_text.py), then stored with the
    -- 'simple' configuration, which only lower-cases. Postgres's own parsers do not segment
    -- Chinese, so the service writes this column rather than a generated one.
    document tsvector not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    primary key (tenant_id, id)
);
-- ListArticles pages in title order.
create index knowledge_articles_title on knowledge_articles (tenant_id, title, id);
create unique index knowledge_articles_request on knowledge_articles (tenant_id, request_id)
    where request_id is not null;
create index knowledge_articles_document on knowledge_articles using gin (document);

create table canned_responses (
    tenant_id uuid not null,
    id uuid not null,
    -- "/refund": what an agent types. One per language, so a shortcut can have a text in each.
    shortcut text not null,
    language text not null,
    title text not null,
    text text not null,
    -- Names of the queues it applies to; empty for every queue.
    queues text[] not null default '{}',
    revision bigint not null,
    request_id text,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    primary key (tenant_id, id)
);
-- ListCannedResponses pages in shortcut order, and filters by a shortcut prefix.
create unique index canned_responses_shortcut on canned_responses (tenant_id, shortcut, language);
create unique index canned_responses_request on canned_responses (tenant_id, request_id)
    where request_id is not null;
