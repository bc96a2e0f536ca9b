"""The knowledge base as a tenant's admins and agents use it, over gRPC against the real
Postgres: articles in Chinese and English found by search, canned responses by shortcut, and
nothing of one tenant visible to another."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest
from conftest import ADMIN_KEY, Stack
from factories import Client, agent, onboard, queue, user
from grpc_errors import bad_fields, fails
from knowledge_relevance import ARTICLES, QUERIES

from lianluo.common.v1 import common_pb2 as common
from lianluo.tenants.v1 import knowledge_pb2 as kpb
from lianluo.tenants.v1 import knowledge_pb2_grpc as krpc
from lianluo.tenants.v1 import tenants_pb2 as pb

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture
def admin(channel: grpc.aio.Channel) -> Client:
    return Client(channel, ADMIN_KEY)


def kb(client: Client) -> krpc.KnowledgeServiceStub:
    return krpc.KnowledgeServiceStub(client.channel)


async def put(c: Client, tenant_id: str, title: str, body: str, **more: object) -> kpb.Article:
    article = kpb.Article(title=title, body=body, **more)  # type: ignore[arg-type]
    return await kb(c).PutArticle(
        kpb.PutArticleRequest(tenant_id=tenant_id, article=article), metadata=c.md
    )


async def search(c: Client, tenant_id: str, query: str, **more: object) -> list[kpb.ArticleHit]:
    found = await kb(c).SearchArticles(
        kpb.SearchArticlesRequest(tenant_id=tenant_id, query=query, **more),  # type: ignore[arg-type]
        metadata=c.md,
    )
    return list(found.hits)


async def test_chinese_and_english_articles_are_found_best_first(admin: Client) -> None:
    t, c = await onboard(admin)
    zh = await put(
        c,
        t.id,
        "信用卡到期换卡",
        "您的信用卡到期前30天，我们会把新卡寄到您的账单地址。收到新卡后请在手机银行激活。",  # noqa: RUF001
    )
    en = await put(
        c,
        t.id,
        "Card expiry",
        "Your card expires at the end of the month printed on it; we mail a new card before.",
        tags=["cards"],
    )
    other = await put(c, t.id, "Refunds", "A refund returns to your card within 10 days.")
    assert (zh.language, en.language, en.revision) == ("zh", "en", 1)

    hits = await search(c, t.id, "信用卡到期了怎么办")
    assert [h.article.id for h in hits] == [zh.id]
    assert "信用卡到期" in hits[0].snippet and hits[0].score > 0
    assert hits[0].article.title == zh.title and not hits[0].article.body

    hits = await search(c, t.id, "my card expired")
    assert [h.article.id for h in hits][:2] == [en.id, other.id]
    assert hits[0].score > hits[1].score
    assert hits[0].snippet.startswith("Your card expires")

    only_zh = await search(c, t.id, "card 信用卡", language="zh")
    assert [h.article.id for h in only_zh] == [zh.id]
    assert await search(c, t.id, "how do I ...") == []


async def test_articles_are_replaced_listed_paged_and_deleted(admin: Client) -> None:
    t, c = await onboard(admin)
    request_id = str(uuid.uuid4())
    first = await kb(c).PutArticle(
        kpb.PutArticleRequest(
            tenant_id=t.id,
            article=kpb.Article(title="Password reset", body="Tap forgot password."),
            request_id=request_id,
        ),
        metadata=c.md,
    )
    again = await kb(c).PutArticle(
        kpb.PutArticleRequest(
            tenant_id=t.id,
            article=kpb.Article(title="Password reset", body="Tap forgot password."),
            request_id=request_id,
        ),
        metadata=c.md,
    )
    assert again == first

    changed = kpb.Article(id=first.id, title="Password reset", body="Tap 'reset password'.")
    replaced = await kb(c).PutArticle(
        kpb.PutArticleRequest(tenant_id=t.id, article=changed, expected_revision=1), metadata=c.md
    )
    assert replaced.revision == 2 and replaced.create_time == first.create_time
    got = await kb(c).GetArticle(
        kpb.GetArticleRequest(tenant_id=t.id, article_id=first.id), metadata=c.md
    )
    assert got == replaced
    await fails(
        kb(c).PutArticle(
            kpb.PutArticleRequest(tenant_id=t.id, article=changed, expected_revision=1),
            metadata=c.md,
        ),
        grpc.StatusCode.ABORTED,
    )
    # The old words are gone from the index, the new ones in it.
    assert await search(c, t.id, "forgot") == []
    assert [h.article.id for h in await search(c, t.id, "reset")] == [first.id]

    for title in ["Bills", "Cards", "Fees", "Points"]:
        await put(c, t.id, title, f"About {title.lower()}.")
    seen, token = [], ""
    while True:
        page = await kb(c).ListArticles(
            kpb.ListArticlesRequest(
                tenant_id=t.id, page=common.PageRequest(page_size=2, page_token=token)
            ),
            metadata=c.md,
        )
        seen += [a.title for a in page.articles]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == ["Bills", "Cards", "Fees", "Password reset", "Points"]

    await kb(c).DeleteArticle(
        kpb.DeleteArticleRequest(tenant_id=t.id, article_id=first.id), metadata=c.md
    )
    await fails(
        kb(c).GetArticle(kpb.GetArticleRequest(tenant_id=t.id, article_id=first.id), metadata=c.md),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await search(c, t.id, "reset") == []
    entries = await c.audit.ListAuditEntries(
        pb.ListAuditEntriesRequest(tenant_id=t.id), metadata=c.md
    )
    mine = [
        (e.method.rsplit("/", 1)[-1], e.revision, e.deleted)
        for e in entries.entries
        if e.resource_id == first.id
    ]
    assert mine == [("PutArticle", 1, False), ("PutArticle", 2, False), ("DeleteArticle", 3, True)]


async def test_bad_input_names_the_field(admin: Client) -> None:
    t, c = await onboard(admin)
    error = await fails(
        kb(c).PutArticle(
            kpb.PutArticleRequest(
                tenant_id=t.id, article=kpb.Article(title="", body="x", language="fr")
            ),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"article.title", "article.language"}
    error = await fails(
        kb(c).PutArticle(
            kpb.PutArticleRequest(
                tenant_id=t.id, article=kpb.Article(title="Big", body="字" * 20_001)
            ),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"article.body"}
    error = await fails(
        kb(c).SearchArticles(kpb.SearchArticlesRequest(tenant_id=t.id, query=" "), metadata=c.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"query"}
    error = await fails(
        kb(c).SearchArticles(
            kpb.SearchArticlesRequest(
                tenant_id=t.id, query="refund", page=common.PageRequest(page_token="nope")
            ),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"page.page_token"}
    error = await fails(
        kb(c).PutCannedResponse(
            kpb.PutCannedResponseRequest(
                tenant_id=t.id,
                canned_response=kpb.CannedResponse(
                    shortcut="refund", title="Refund", text="Sure.", queues=["no-such-queue"]
                ),
            ),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"canned_response.shortcut"}
    error = await fails(
        kb(c).PutCannedResponse(
            kpb.PutCannedResponseRequest(
                tenant_id=t.id,
                canned_response=kpb.CannedResponse(
                    shortcut="/refund", title="Refund", text="Sure.", queues=["no-such-queue"]
                ),
            ),
            metadata=c.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"canned_response.queues[0]"}
    error = await fails(
        kb(c).ListCannedResponses(
            kpb.ListCannedResponsesRequest(tenant_id=t.id, shortcut_prefix="re%"), metadata=c.md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == {"shortcut_prefix"}


async def test_canned_responses_by_shortcut_language_and_queue(admin: Client) -> None:
    t, c = await onboard(admin)
    for name in ("cards", "loans"):
        await c.queues.CreateQueue(
            pb.CreateQueueRequest(tenant_id=t.id, queue=queue(name)), metadata=c.md
        )

    async def put_canned(**fields: object) -> kpb.CannedResponse:
        return await kb(c).PutCannedResponse(
            kpb.PutCannedResponseRequest(
                tenant_id=t.id,
                canned_response=kpb.CannedResponse(**fields),  # type: ignore[arg-type]
            ),
            metadata=c.md,
        )

    refund_en = await put_canned(
        shortcut="/refund", title="Refund", text="Your refund is on its way.", queues=["cards"]
    )
    refund_zh = await put_canned(shortcut="/refund", title="退款", text="退款已受理，请耐心等待。")  # noqa: RUF001
    hello = await put_canned(shortcut="/hello", title="Hello", text="Hello, how can I help?")
    loan = await put_canned(
        shortcut="/rate", title="Rate", text="Our rate is 3.5%.", queues=["loans"]
    )
    assert (refund_en.language, refund_zh.language) == ("en", "zh")
    await fails(
        put_canned(shortcut="/refund", title="Again", text="Another refund text."),
        grpc.StatusCode.ALREADY_EXISTS,
    )

    async def listed(**filters: object) -> list[str]:
        page = await kb(c).ListCannedResponses(
            kpb.ListCannedResponsesRequest(tenant_id=t.id, **filters),  # type: ignore[arg-type]
            metadata=c.md,
        )
        return [r.id for r in page.canned_responses]

    assert set(await listed(shortcut_prefix="/ref")) == {refund_en.id, refund_zh.id}
    assert set(await listed(queue="cards")) == {refund_en.id, refund_zh.id, hello.id}
    assert set(await listed(queue="loans")) == {refund_zh.id, hello.id, loan.id}
    assert len(await listed()) == 4

    renamed = kpb.CannedResponse()
    renamed.CopyFrom(hello)
    renamed.shortcut, renamed.text = "/hi", "Hi! How can I help?"
    replaced = await kb(c).PutCannedResponse(
        kpb.PutCannedResponseRequest(tenant_id=t.id, canned_response=renamed), metadata=c.md
    )
    assert (replaced.shortcut, replaced.revision) == ("/hi", 2)
    await kb(c).DeleteCannedResponse(
        kpb.DeleteCannedResponseRequest(tenant_id=t.id, canned_response_id=loan.id),
        metadata=c.md,
    )
    assert set(await listed(queue="loans")) == {refund_zh.id, hello.id}


async def test_another_tenant_sees_nothing_and_its_ids_are_not_found(
    admin: Client, stack: Stack
) -> None:
    a, as_a = await onboard(admin)
    b, as_b = await onboard(admin)
    article = await put(as_a, a.id, "退款多久到账", "退款通常在7至10个工作日内退回。")
    canned = await kb(as_a).PutCannedResponse(
        kpb.PutCannedResponseRequest(
            tenant_id=a.id,
            canned_response=kpb.CannedResponse(shortcut="/refund", title="退款", text="已受理。"),
        ),
        metadata=as_a.md,
    )
    await put(as_b, b.id, "Points", "Points never expire.")

    # B searching its own tenant finds only its own; A's ids are not found in B's tenant.
    assert await search(as_b, b.id, "退款") == []
    listed = await kb(as_b).ListArticles(kpb.ListArticlesRequest(tenant_id=b.id), metadata=as_b.md)
    assert [x.title for x in listed.articles] == ["Points"]
    canned_b = await kb(as_b).ListCannedResponses(
        kpb.ListCannedResponsesRequest(tenant_id=b.id), metadata=as_b.md
    )
    assert not canned_b.canned_responses
    md = as_b.md
    for call in (
        kb(as_b).GetArticle(
            kpb.GetArticleRequest(tenant_id=b.id, article_id=article.id), metadata=md
        ),
        kb(as_b).DeleteArticle(
            kpb.DeleteArticleRequest(tenant_id=b.id, article_id=article.id), metadata=md
        ),
        kb(as_b).PutArticle(
            kpb.PutArticleRequest(
                tenant_id=b.id, article=kpb.Article(id=article.id, title="Mine", body="Mine")
            ),
            metadata=md,
        ),
        kb(as_b).DeleteCannedResponse(
            kpb.DeleteCannedResponseRequest(tenant_id=b.id, canned_response_id=canned.id),
            metadata=md,
        ),
        kb(as_b).PutCannedResponse(
            kpb.PutCannedResponseRequest(
                tenant_id=b.id,
                canned_response=kpb.CannedResponse(
                    id=canned.id, shortcut="/x", title="Mine", text="Mine"
                ),
            ),
            metadata=md,
        ),
    ):
        await fails(call, grpc.StatusCode.NOT_FOUND)
    # Naming A's tenant with B's key is refused before anything is read.
    await fails(
        kb(as_b).SearchArticles(
            kpb.SearchArticlesRequest(tenant_id=a.id, query="退款"), metadata=as_b.md
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # A's article is untouched, and leaves with its tenant.
    assert [h.article.id for h in await search(as_a, a.id, "退款")] == [article.id]
    await admin.tenants.DeleteTenant(pb.DeleteTenantRequest(tenant_id=a.id), metadata=admin.md)
    conn = await asyncpg.connect(stack.database_url)
    try:
        left = await conn.fetchval(
            "select (select count(*) from tenants.knowledge_articles where tenant_id = $1) + "
            "(select count(*) from tenants.canned_responses where tenant_id = $1)",
            uuid.UUID(a.id),
        )
    finally:
        await conn.close()
    assert left == 0


async def test_agents_and_supervisors_search_and_only_admins_write(admin: Client) -> None:
    t, c = await onboard(admin)
    await c.agents.CreateAgent(pb.CreateAgentRequest(tenant_id=t.id, agent=agent()), metadata=c.md)
    await c.queues.CreateQueue(pb.CreateQueueRequest(tenant_id=t.id, queue=queue()), metadata=c.md)
    article = await put(c, t.id, "账单分期", "单笔消费满500元即可申请账单分期。")
    people = {
        "agent": user("li", pb.ROLE_AGENT, agent="li.wei"),
        "supervisor": user("sam", pb.ROLE_SUPERVISOR, queues=["cards"]),
    }
    for person in people.values():
        await c.users.CreateUser(
            pb.CreateUserRequest(tenant_id=t.id, user=person, password=PASSWORD), metadata=c.md
        )
    for name, person in people.items():
        tokens = await c.auth.Login(
            pb.LoginRequest(tenant=t.name, name=person.name, password=PASSWORD)
        )
        as_person = Client(c.channel, tokens.access_token)
        hits = await search(as_person, t.id, "分期")
        assert [h.article.id for h in hits] == [article.id], name
        await kb(as_person).ListCannedResponses(
            kpb.ListCannedResponsesRequest(tenant_id=t.id), metadata=as_person.md
        )
        await fails(put(as_person, t.id, "Mine", "Mine"), grpc.StatusCode.PERMISSION_DENIED)
        await fails(
            kb(as_person).DeleteArticle(
                kpb.DeleteArticleRequest(tenant_id=t.id, article_id=article.id),
                metadata=as_person.md,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )


async def test_relevance_set_puts_the_answer_first(admin: Client) -> None:
    """Every question of the relevance set finds its article first; prints precision@1 and the
    mean reciprocal rank (docs/performance.md keeps the figures)."""
    t, c = await onboard(admin)
    ids = {}
    for key, (title, body, tags) in ARTICLES.items():
        ids[key] = (await put(c, t.id, title, body, tags=tags)).id
    names = {v: k for k, v in ids.items()}
    results = await asyncio.gather(*(search(c, t.id, q) for q, _ in QUERIES))
    ranks, misses = [], []
    for (query, wanted), hits in zip(QUERIES, results, strict=True):
        order = [names[h.article.id] for h in hits]
        rank = order.index(wanted) + 1 if wanted in order else None
        ranks.append(rank)
        if rank != 1:
            misses.append(f"{query!r}: wanted {wanted}, got {order[:3]}")
    precision = sum(r == 1 for r in ranks) / len(ranks)
    mrr = sum(1 / r for r in ranks if r) / len(ranks)
    print(
        f"\nknowledge relevance: {len(ARTICLES)} articles, {len(QUERIES)} queries, "
        f"precision@1 {precision:.3f}, MRR {mrr:.3f}"
    )
    assert not misses, "\n".join(misses)
