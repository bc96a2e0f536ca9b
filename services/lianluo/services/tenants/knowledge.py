"""The knowledge base's logic: authorise, validate, segment, write and audit, in one transaction.

Articles and canned responses are read through KnowledgeService only, so a change is written
to the audit log but not published on `tenant.config` (no other service consumes them).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from lianluo.domain.words import Segmenter, document_text, query_terms, snippet, tsquery_text
from lianluo.runtime.errors import Aborted, AlreadyExists, FieldViolation, InvalidArgument, NotFound
from lianluo.runtime.paging import decode_token, encode_token, page_size
from lianluo.services.tenants import events, knowledge_rules
from lianluo.services.tenants.domain import QUEUE
from lianluo.services.tenants.knowledge_repository import KnowledgeRepository
from lianluo.services.tenants.repository import Repository, parse_id
from lianluo.services.tenants.service import scoped_tenant
from lianluo.tenants.v1 import knowledge_pb2 as kpb

ARTICLE, CANNED = "knowledge_article", "canned_response"
# How deep a search pages; far past what anyone reads, and bounded so a forged token cannot
# ask Postgres for an offset it cannot hold.
MAX_OFFSET = 100_000
M = TypeVar("M", kpb.Article, kpb.CannedResponse)


def _fresh(message: M) -> M:
    """A client's resource without what only the server sets (its id aside)."""
    out = type(message)()
    out.CopyFrom(message)
    out.ClearField("tenant_id")
    out.ClearField("revision")
    out.ClearField("create_time")
    out.ClearField("update_time")
    return out


def _same(a: M, b: M) -> bool:
    """Whether two versions hold the same content (what a client writes)."""
    return _fresh(a) == _fresh(b)


def _after(token: str, scope: str) -> tuple[str, uuid.UUID] | None:
    """The (sort key, id) a list token of `scope` continues after."""
    if not token:
        return None
    after = decode_token(token, scope)
    try:
        key, last = after[0], uuid.UUID(after[1])
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        key, last = None, None
    if not isinstance(key, str) or "\x00" in key or last is None:
        raise InvalidArgument([FieldViolation("page.page_token", "not a token from this list")])
    return key, last


def _offset(token: str, scope: str) -> int:
    if not token:
        return 0
    after = decode_token(token, scope)
    if not isinstance(after, int) or not 0 <= after <= MAX_OFFSET:
        raise InvalidArgument([FieldViolation("page.page_token", "not a token from this search")])
    return after


class Knowledge:
    """Every operation of the knowledge API, scoped to the caller's tenant."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        store: KnowledgeRepository,
        segmenter: Segmenter,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._store = store
        self._segmenter = segmenter

    # ------------------------------------------------------------------ articles

    async def put_article(
        self, tenant_id: str, article: kpb.Article, request_id: str, expected_revision: int
    ) -> kpb.Article:
        """Create an article (no id) or replace one, with the words it is searched by."""
        tid = scoped_tenant(tenant_id)
        candidate = _fresh(article)
        knowledge_rules.validate_article(candidate)
        rid = parse_id(candidate.id, "article.id") if candidate.id else None
        if candidate.id and rid is None:
            raise NotFound(ARTICLE, candidate.id)
        candidate.language = knowledge_rules.language_of(
            candidate.language, candidate.title, candidate.body
        )
        # Segmenting a long body takes a while: before the transaction, not holding a connection.
        title = await self._segmenter.terms(" ".join([candidate.title, *candidate.tags]))
        body = await self._segmenter.terms(candidate.body)
        words = (document_text(title), document_text(body))
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._repo.lock_tenant(conn, tid):
                raise NotFound("tenant", tenant_id)
            if rid is None:
                if request_id:
                    earlier = await self._store.article_by_request(conn, tid, request_id)
                    if earlier is not None:
                        return earlier
                _new(candidate, tid)
                try:
                    async with conn.transaction():
                        await self._store.insert_article(
                            conn, candidate, words, request_id or None, now
                        )
                except asyncpg.UniqueViolationError:
                    # A concurrent retry of the same create stored it first.
                    earlier = await self._store.article_by_request(conn, tid, request_id)
                    if earlier is None:
                        raise
                    return earlier
            else:
                stored = await self._store.article(conn, tid, rid, for_update=True)
                if stored is None:
                    raise NotFound(ARTICLE, candidate.id)
                _check_revision(ARTICLE, stored.id, stored.revision, expected_revision)
                if _same(stored, candidate):
                    return stored
                candidate.tenant_id, candidate.revision = str(tid), stored.revision + 1
                candidate.create_time.CopyFrom(stored.create_time)
                await self._store.replace_article(conn, candidate, words, now)
            await events.audit_unpublished(
                conn, str(tid), ARTICLE, candidate.id, candidate.revision, deleted=False
            )
        candidate.update_time.FromDatetime(now)
        if candidate.revision == 1:
            candidate.create_time.FromDatetime(now)
        return candidate

    async def get_article(self, tenant_id: str, article_id: str) -> kpb.Article:
        tid = scoped_tenant(tenant_id)
        rid = parse_id(article_id, "article_id")
        async with self._pool.acquire() as conn:
            found = None if rid is None else await self._store.article(conn, tid, rid)
        if found is None:
            raise NotFound(ARTICLE, article_id)
        return found

    async def delete_article(self, tenant_id: str, article_id: str) -> None:
        tid = scoped_tenant(tenant_id)
        rid = parse_id(article_id, "article_id")
        async with self._pool.acquire() as conn, conn.transaction():
            stored = rid and await self._store.article(conn, tid, rid, for_update=True)
            if not stored or rid is None:
                raise NotFound(ARTICLE, article_id)
            await self._store.delete_article(conn, tid, rid)
            await events.audit_unpublished(
                conn, str(tid), ARTICLE, stored.id, stored.revision + 1, deleted=True
            )

    async def list_articles(
        self, tenant_id: str, size: int, token: str
    ) -> tuple[list[kpb.Article], str]:
        tid = scoped_tenant(tenant_id)
        scope = f"{ARTICLE}:{tid}"
        wanted, after = page_size(size), _after(token, scope)
        async with self._pool.acquire() as conn:
            items = await self._store.list_articles(conn, tid, after, wanted)
        more = len(items) == wanted
        return items, encode_token(scope, [items[-1].title, items[-1].id]) if more else ""

    async def search(
        self, tenant_id: str, query: str, language: str, size: int, token: str
    ) -> tuple[list[kpb.ArticleHit], str]:
        """The articles that share words with `query`, best first, a page at a time."""
        tid = scoped_tenant(tenant_id)
        knowledge_rules.validate_search(query, language)
        scope = f"search:{tid}:{language}:{query}"
        wanted, offset = page_size(size), _offset(token, scope)
        words = await self._segmenter.terms(query)
        operands = query_terms(words)
        if not operands:
            return [], ""
        async with self._pool.acquire() as conn:
            found = await self._store.search_articles(
                conn, tid, operands, tsquery_text(operands), language, offset, wanted
            )
        hits = []
        for article, score in found:
            hit = kpb.ArticleHit(snippet=snippet(article.body, words), score=score)
            article.ClearField("body")
            hit.article.CopyFrom(article)
            hits.append(hit)
        return hits, encode_token(scope, offset + wanted) if len(found) == wanted else ""

    # ------------------------------------------------------------------ canned responses

    async def put_canned(
        self, tenant_id: str, canned: kpb.CannedResponse, request_id: str, expected_revision: int
    ) -> kpb.CannedResponse:
        """Create a canned response (no id) or replace one."""
        tid = scoped_tenant(tenant_id)
        candidate = _fresh(canned)
        knowledge_rules.validate_canned_response(candidate)
        rid = parse_id(candidate.id, "canned_response.id") if candidate.id else None
        if candidate.id and rid is None:
            raise NotFound(CANNED, candidate.id)
        candidate.language = knowledge_rules.language_of(
            candidate.language, candidate.title, candidate.text
        )
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._repo.lock_tenant(conn, tid):
                raise NotFound("tenant", tenant_id)
            if rid is None and request_id:
                earlier = await self._store.canned_by_request(conn, tid, request_id)
                if earlier is not None:
                    return earlier
            await self._check_queues(conn, tid, candidate)
            holder = await self._store.canned_holding(
                conn, tid, candidate.shortcut, candidate.language
            )
            if holder is not None and holder != rid:
                raise AlreadyExists(CANNED, f"{candidate.shortcut} ({candidate.language})")
            if rid is None:
                _new(candidate, tid)
                await self._write_canned(conn, candidate, request_id or None, now, insert=True)
            else:
                stored = await self._store.canned(conn, tid, rid, for_update=True)
                if stored is None:
                    raise NotFound(CANNED, candidate.id)
                _check_revision(CANNED, stored.id, stored.revision, expected_revision)
                if _same(stored, candidate):
                    return stored
                candidate.tenant_id, candidate.revision = str(tid), stored.revision + 1
                candidate.create_time.CopyFrom(stored.create_time)
                await self._write_canned(conn, candidate, None, now, insert=False)
            await events.audit_unpublished(
                conn, str(tid), CANNED, candidate.id, candidate.revision, deleted=False
            )
        candidate.update_time.FromDatetime(now)
        if candidate.revision == 1:
            candidate.create_time.FromDatetime(now)
        return candidate

    async def _write_canned(
        self,
        conn: asyncpg.Connection,
        canned: kpb.CannedResponse,
        request_id: str | None,
        now: datetime,
        *,
        insert: bool,
    ) -> None:
        try:
            async with conn.transaction():
                if insert:
                    await self._store.insert_canned(conn, canned, request_id, now)
                else:
                    await self._store.replace_canned(conn, canned, now)
        except asyncpg.UniqueViolationError as error:
            # A concurrent write took the shortcut in this language first.
            raise AlreadyExists(CANNED, f"{canned.shortcut} ({canned.language})") from error

    async def _check_queues(
        self, conn: asyncpg.Connection, tid: uuid.UUID, canned: kpb.CannedResponse
    ) -> None:
        if not canned.queues:
            return
        found = await self._repo.names_used(conn, tid, QUEUE, list(canned.queues))
        missing = [
            FieldViolation(f"canned_response.queues[{i}]", f"no queue {name!r}")
            for i, name in enumerate(canned.queues)
            if name not in found
        ]
        if missing:
            raise InvalidArgument(missing)

    async def delete_canned(self, tenant_id: str, canned_id: str) -> None:
        tid = scoped_tenant(tenant_id)
        rid = parse_id(canned_id, "canned_response_id")
        async with self._pool.acquire() as conn, conn.transaction():
            stored = rid and await self._store.canned(conn, tid, rid, for_update=True)
            if not stored or rid is None:
                raise NotFound(CANNED, canned_id)
            await self._store.delete_canned(conn, tid, rid)
            await events.audit_unpublished(
                conn, str(tid), CANNED, stored.id, stored.revision + 1, deleted=True
            )

    async def list_canned(
        self, tenant_id: str, shortcut_prefix: str, queue: str, size: int, token: str
    ) -> tuple[list[kpb.CannedResponse], str]:
        tid = scoped_tenant(tenant_id)
        knowledge_rules.validate_canned_filters(shortcut_prefix, queue)
        scope = f"{CANNED}:{tid}:{shortcut_prefix}:{queue}"
        wanted, after = page_size(size), _after(token, scope)
        async with self._pool.acquire() as conn:
            items = await self._store.list_canned(conn, tid, shortcut_prefix, queue, after, wanted)
        more = len(items) == wanted
        return items, encode_token(scope, [items[-1].shortcut, items[-1].id]) if more else ""


def _new(resource: kpb.Article | kpb.CannedResponse, tid: uuid.UUID) -> None:
    resource.id, resource.tenant_id, resource.revision = str(uuid.uuid4()), str(tid), 1


def _check_revision(kind: str, resource_id: str, stored: int, expected: int) -> None:
    if expected and stored != expected:
        raise Aborted(
            kind,
            resource_id,
            f"{kind} {resource_id} is at revision {stored}, not {expected}; read it again",
        )
