"""Postgres access for the knowledge base. Every query is scoped by the tenant id."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lianluo.tenants.v1 import knowledge_pb2 as kpb

_ARTICLE = "id, tenant_id, title, body, language, tags, revision, created_at, updated_at"
_CANNED = "id, tenant_id, shortcut, language, title, text, queues, revision, created_at, updated_at"
# The words of the title and tags weigh more than those of the body (ts_rank_cd's default
# weights: A 1.0, B 0.4).
_DOCUMENT = "setweight(to_tsvector('simple', $4), 'A') || setweight(to_tsvector('simple', $5), 'B')"


def _stamped(message: Any, row: asyncpg.Record) -> Any:
    message.create_time.FromDatetime(row["created_at"])
    message.update_time.FromDatetime(row["updated_at"])
    return message


def article_of(row: asyncpg.Record) -> kpb.Article:
    article = kpb.Article(
        id=str(row["id"]),
        tenant_id=str(row["tenant_id"]),
        title=row["title"],
        body=row["body"],
        language=row["language"],
        tags=row["tags"],
        revision=row["revision"],
    )
    return _stamped(article, row)  # type: ignore[no-any-return]


def canned_of(row: asyncpg.Record) -> kpb.CannedResponse:
    canned = kpb.CannedResponse(
        id=str(row["id"]),
        tenant_id=str(row["tenant_id"]),
        shortcut=row["shortcut"],
        title=row["title"],
        text=row["text"],
        queues=row["queues"],
        language=row["language"],
        revision=row["revision"],
    )
    return _stamped(canned, row)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Table:
    name: str
    columns: str
    read: Callable[[asyncpg.Record], Any]


ARTICLES = _Table("knowledge_articles", _ARTICLE, article_of)
CANNED = _Table("canned_responses", _CANNED, canned_of)


async def _one(
    conn: asyncpg.Connection,
    table: _Table,
    tenant_id: uuid.UUID,
    column: str,
    value: object,
    for_update: bool = False,
) -> Any | None:
    """The tenant's row of `table` whose `column` (id or request_id) is `value`, if any."""
    lock = " for update" if for_update else ""
    row = await conn.fetchrow(
        f"select {table.columns} from {table.name} where tenant_id = $1 and {column} = $2{lock}",  # noqa: S608
        tenant_id,
        value,
    )
    return None if row is None else table.read(row)


class KnowledgeRepository:
    """Articles, with the words they are searched by, and canned responses."""

    # ------------------------------------------------------------------ articles

    async def article(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        article_id: uuid.UUID,
        *,
        for_update: bool = False,
    ) -> kpb.Article | None:
        return await _one(conn, ARTICLES, tenant_id, "id", article_id, for_update)

    async def article_by_request(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, request_id: str
    ) -> kpb.Article | None:
        return await _one(conn, ARTICLES, tenant_id, "request_id", request_id)

    async def insert_article(
        self,
        conn: asyncpg.Connection,
        article: kpb.Article,
        words: tuple[str, str],
        request_id: str | None,
        now: datetime,
    ) -> None:
        """Store a new article; `words` are its title's and body's (lianluo.domain.words.terms)."""
        await conn.execute(
            "insert into knowledge_articles (tenant_id, id, revision, title, body, language, "  # noqa: S608
            f"tags, request_id, document, created_at, updated_at) values ($1, $2, $3, $6, $7, "
            f"$8, $9, $10, {_DOCUMENT}, $11, $11)",
            uuid.UUID(article.tenant_id),
            uuid.UUID(article.id),
            article.revision,
            *words,
            article.title,
            article.body,
            article.language,
            list(article.tags),
            request_id,
            now,
        )

    async def replace_article(
        self,
        conn: asyncpg.Connection,
        article: kpb.Article,
        words: tuple[str, str],
        now: datetime,
    ) -> None:
        await conn.execute(
            f"update knowledge_articles set revision = $3, document = {_DOCUMENT}, title = $6, "  # noqa: S608
            "body = $7, language = $8, tags = $9, updated_at = $10 "
            "where tenant_id = $1 and id = $2",
            uuid.UUID(article.tenant_id),
            uuid.UUID(article.id),
            article.revision,
            *words,
            article.title,
            article.body,
            article.language,
            list(article.tags),
            now,
        )

    async def delete_article(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, article_id: uuid.UUID
    ) -> None:
        await conn.execute(
            "delete from knowledge_articles where tenant_id = $1 and id = $2",
            tenant_id,
            article_id,
        )

    async def list_articles(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        after: tuple[str, uuid.UUID] | None,
        size: int,
    ) -> list[kpb.Article]:
        """One page in (title, id) order, after the given title and id."""
        rows = await conn.fetch(
            f"select {_ARTICLE} from knowledge_articles where tenant_id = $1 "  # noqa: S608
            "and ($2::text is null or (title, id) > ($2, $3)) order by title, id limit $4",
            tenant_id,
            after[0] if after else None,
            after[1] if after else None,
            size,
        )
        return [article_of(r) for r in rows]

    async def search_articles(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        operands: list[str],
        query: str,
        language: str,
        offset: int,
        size: int,
    ) -> list[tuple[kpb.Article, float]]:
        """The articles that match `query`, best first, each with its score: the share of the
        query's words (tsquery operands) it has, plus its cover density (title and tags above
        body) scaled into [0, 1)."""
        rows = await conn.fetch(
            f"select {_ARTICLE}, "  # noqa: S608
            "(select count(*) from unnest($2::text[]) w "
            "   where document @@ to_tsquery('simple', w))::float8 / cardinality($2::text[]) "
            "+ ts_rank_cd(document, q, 32) as score "
            "from knowledge_articles, to_tsquery('simple', $6) q "
            "where tenant_id = $1 and document @@ q and ($3 = '' or language = $3) "
            "order by score desc, id limit $4 offset $5",
            tenant_id,
            operands,
            language,
            size,
            offset,
            query,
        )
        return [(article_of(r), r["score"]) for r in rows]

    # ------------------------------------------------------------------ canned responses

    async def canned(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        canned_id: uuid.UUID,
        *,
        for_update: bool = False,
    ) -> kpb.CannedResponse | None:
        return await _one(conn, CANNED, tenant_id, "id", canned_id, for_update)

    async def canned_by_request(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, request_id: str
    ) -> kpb.CannedResponse | None:
        return await _one(conn, CANNED, tenant_id, "request_id", request_id)

    async def canned_holding(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, shortcut: str, language: str
    ) -> uuid.UUID | None:
        """The id of the response that holds this shortcut in this language, if any."""
        found: uuid.UUID | None = await conn.fetchval(
            "select id from canned_responses where tenant_id = $1 and shortcut = $2 "
            "and language = $3",
            tenant_id,
            shortcut,
            language,
        )
        return found

    async def insert_canned(
        self,
        conn: asyncpg.Connection,
        canned: kpb.CannedResponse,
        request_id: str | None,
        now: datetime,
    ) -> None:
        await conn.execute(
            "insert into canned_responses (tenant_id, id, revision, shortcut, language, title, "
            "text, queues, request_id, created_at, updated_at) "
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            uuid.UUID(canned.tenant_id),
            uuid.UUID(canned.id),
            canned.revision,
            canned.shortcut,
            canned.language,
            canned.title,
            canned.text,
            list(canned.queues),
            request_id,
            now,
        )

    async def replace_canned(
        self, conn: asyncpg.Connection, canned: kpb.CannedResponse, now: datetime
    ) -> None:
        await conn.execute(
            "update canned_responses set revision = $3, shortcut = $4, language = $5, "
            "title = $6, text = $7, queues = $8, updated_at = $9 "
            "where tenant_id = $1 and id = $2",
            uuid.UUID(canned.tenant_id),
            uuid.UUID(canned.id),
            canned.revision,
            canned.shortcut,
            canned.language,
            canned.title,
            canned.text,
            list(canned.queues),
            now,
        )

    async def delete_canned(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, canned_id: uuid.UUID
    ) -> None:
        await conn.execute(
            "delete from canned_responses where tenant_id = $1 and id = $2", tenant_id, canned_id
        )

    async def list_canned(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        shortcut_prefix: str,
        queue: str,
        after: tuple[str, uuid.UUID] | None,
        size: int,
    ) -> list[kpb.CannedResponse]:
        """One page in (shortcut, id) order, after the given shortcut and id."""
        rows = await conn.fetch(
            f"select {_CANNED} from canned_responses where tenant_id = $1 "  # noqa: S608
            "and starts_with(shortcut, $2) "
            "and ($3 = '' or cardinality(queues) = 0 or $3 = any(queues)) "
            "and ($4::text is null or (shortcut, id) > ($4, $5)) "
            "order by shortcut, id limit $6",
            tenant_id,
            shortcut_prefix,
            queue,
            after[0] if after else None,
            after[1] if after else None,
            size,
        )
        return [canned_of(r) for r in rows]
