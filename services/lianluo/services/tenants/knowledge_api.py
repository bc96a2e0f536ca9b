"""The knowledge base's gRPC adapter: requests in, service calls, responses out."""

from __future__ import annotations

from typing import Any

from lianluo.common.v1 import common_pb2
from lianluo.runtime import auth
from lianluo.services.tenants.knowledge import Knowledge
from lianluo.tenants.v1 import knowledge_pb2 as kpb
from lianluo.tenants.v1 import knowledge_pb2_grpc as krpc

READ, WRITE = auth.needs("knowledge:read"), auth.needs("knowledge:write")


def _page(token: str) -> common_pb2.PageResponse:
    return common_pb2.PageResponse(next_page_token=token)


class KnowledgeApi(krpc.KnowledgeServiceServicer):
    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge

    @WRITE
    async def PutArticle(self, request: kpb.PutArticleRequest, _: Any) -> kpb.Article:
        return await self.knowledge.put_article(
            request.tenant_id, request.article, request.request_id, request.expected_revision
        )

    @READ
    async def GetArticle(self, request: kpb.GetArticleRequest, _: Any) -> kpb.Article:
        return await self.knowledge.get_article(request.tenant_id, request.article_id)

    @WRITE
    async def DeleteArticle(
        self, request: kpb.DeleteArticleRequest, _: Any
    ) -> kpb.DeleteArticleResponse:
        await self.knowledge.delete_article(request.tenant_id, request.article_id)
        return kpb.DeleteArticleResponse()

    @READ
    async def ListArticles(
        self, request: kpb.ListArticlesRequest, _: Any
    ) -> kpb.ListArticlesResponse:
        items, token = await self.knowledge.list_articles(
            request.tenant_id, request.page.page_size, request.page.page_token
        )
        return kpb.ListArticlesResponse(articles=items, page=_page(token))

    @READ
    async def SearchArticles(
        self, request: kpb.SearchArticlesRequest, _: Any
    ) -> kpb.SearchArticlesResponse:
        hits, token = await self.knowledge.search(
            request.tenant_id,
            request.query,
            request.language,
            request.page.page_size,
            request.page.page_token,
        )
        return kpb.SearchArticlesResponse(hits=hits, page=_page(token))

    @WRITE
    async def PutCannedResponse(
        self, request: kpb.PutCannedResponseRequest, _: Any
    ) -> kpb.CannedResponse:
        return await self.knowledge.put_canned(
            request.tenant_id,
            request.canned_response,
            request.request_id,
            request.expected_revision,
        )

    @WRITE
    async def DeleteCannedResponse(
        self, request: kpb.DeleteCannedResponseRequest, _: Any
    ) -> kpb.DeleteCannedResponseResponse:
        await self.knowledge.delete_canned(request.tenant_id, request.canned_response_id)
        return kpb.DeleteCannedResponseResponse()

    @READ
    async def ListCannedResponses(
        self, request: kpb.ListCannedResponsesRequest, _: Any
    ) -> kpb.ListCannedResponsesResponse:
        items, token = await self.knowledge.list_canned(
            request.tenant_id,
            request.shortcut_prefix,
            request.queue,
            request.page.page_size,
            request.page.page_token,
        )
        return kpb.ListCannedResponsesResponse(canned_responses=items, page=_page(token))
