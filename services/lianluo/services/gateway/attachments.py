"""Files and images customers send: checked (size, type, content), kept in the object store
with their sha256, and opened only through links that expire."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import asyncpg
from aiohttp import web

from lianluo.media.v1 import media_pb2 as mpb
from lianluo.runtime.errors import NotFound
from lianluo.runtime.logs import get_logger
from lianluo.runtime.objects import (
    CorruptObject,
    Links,
    Objects,
    attachment_key,
    attachment_path,
)
from lianluo.services.gateway import domain
from lianluo.services.gateway.repository import Repository
from lianluo.services.gateway.settings import GatewaySettings

log = get_logger(__name__)


@dataclass(frozen=True)
class Kept:
    id: str
    content: mpb.MessageContent


class Attachments:
    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        objects: Objects,
        links: Links,
        settings: GatewaySettings,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._objects = objects
        self._links = links
        self._settings = settings

    @property
    def links(self) -> Links:
        return self._links

    @property
    def link_seconds(self) -> int:
        return self._settings.gateway_link_seconds

    @property
    def sent_link_seconds(self) -> int:
        return self._settings.gateway_sent_link_seconds

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/attachments/{tenant}/{id}", self.download),
            web.get("/v1/objects/{sha256}/{key:.+}", self.download_object),
        ]

    async def keep(
        self, tenant_id: str, interaction_id: str, name: str, content_type: str, data: bytes
    ) -> Kept:
        """Check and store one file of an interaction (domain.BadAttachment when refused)."""
        kind = domain.check_attachment(
            content_type, data, self._settings.gateway_attachment_max_bytes
        )
        name = domain.attachment_name(name)
        aid = uuid.uuid4()
        stored = await self._objects.put(attachment_key(tenant_id, str(aid)), data, kind)
        try:
            async with self._pool.acquire() as conn:
                await self._repo.add_attachment(
                    conn,
                    uuid.UUID(tenant_id),
                    aid,
                    uuid.UUID(interaction_id),
                    name,
                    kind,
                    stored.size,
                    stored.sha256,
                    stored.key,
                )
        except BaseException:
            await self._objects.delete(stored.key)
            raise
        content = domain.attachment_content(str(aid), name, kind, stored.size, stored.sha256)
        return Kept(str(aid), content)

    async def deliver(
        self,
        tenant_id: str,
        kept: Kept,
        send: Callable[[mpb.MessageContent], Awaitable[mpb.Message]],
    ) -> mpb.Message:
        """Send a kept file's message. Nothing stays of a file whose message was refused (an
        ended chat, say), nor of one sent again with the same id: the first file stands."""
        try:
            message = await send(kept.content)
        except BaseException:
            await self.forget(tenant_id, kept.id)
            raise
        if message.content != kept.content:
            await self.forget(tenant_id, kept.id)
        return message

    async def forget(self, tenant_id: str, attachment_id: str) -> None:
        """Undo `keep` for a file whose message could not be sent."""
        async with self._pool.acquire() as conn:
            row = await self._repo.attachment(conn, uuid.UUID(tenant_id), uuid.UUID(attachment_id))
            if row is None:
                return
            await self._repo.drop_attachment(conn, row["tenant_id"], row["id"])
        await self._objects.delete(row["object_key"])

    async def find(self, tenant_id: str, attachment_id: str) -> asyncpg.Record:
        try:
            tid, aid = uuid.UUID(tenant_id), uuid.UUID(attachment_id)
        except ValueError:
            raise NotFound("attachment", attachment_id) from None
        async with self._pool.acquire() as conn:
            row = await self._repo.attachment(conn, tid, aid)
        if row is None:
            raise NotFound("attachment", attachment_id)
        return row

    async def read(self, row: asyncpg.Record) -> bytes:
        """The file's bytes, checked against its sha256 (CorruptObject when they differ)."""
        return await self._objects.get(row["object_key"], row["sha256"])

    def path(self, tenant_id: str, attachment_id: str, seconds: int) -> str:
        return self._links.sign(attachment_path(tenant_id, attachment_id), seconds)

    def url(self, tenant_id: str, attachment_id: str, seconds: int) -> tuple[str, datetime]:
        """An absolute link that opens the file for `seconds`, and when it stops."""
        expires = datetime.now(UTC) + timedelta(seconds=seconds)
        return self._links.url(attachment_path(tenant_id, attachment_id), seconds), expires

    async def download(self, request: web.Request) -> web.Response:
        tenant_id, attachment_id = request.match_info["tenant"], request.match_info["id"]
        if not self._links.admits(request.path, request.query):
            raise web.HTTPForbidden(text="this link is not valid, or has expired")
        try:
            row = await self.find(tenant_id, attachment_id)
            data = await self.read(row)
        except NotFound:
            raise web.HTTPNotFound(text="no such attachment") from None
        except FileNotFoundError:
            # Purged with its record (retention), or gone from the store.
            raise web.HTTPGone(text="the file was deleted") from None
        except CorruptObject:
            log.error("an attachment differs from its sha256", attachment=attachment_id)
            raise web.HTTPInternalServerError(text="the file is damaged") from None
        inline = row["content_type"].startswith("image/")
        disposition = "inline" if inline else "attachment"
        return web.Response(
            body=data,
            content_type=row["content_type"],
            headers={
                "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(row['name'])}",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "private, max-age=60",
                "Digest": f"sha-256={row['sha256']}",
            },
        )

    async def download_object(self, request: web.Request) -> web.Response:
        """Any object of the cell's store (a call's audio in a record's export), through a link
        the platform signed: the path names the key and its sha256, so the bytes are checked
        against what the record says before they go out."""
        if not self._links.admits(request.path, request.query):
            raise web.HTTPForbidden(text="this link is not valid, or has expired")
        key, sha256 = request.match_info["key"], request.match_info["sha256"]
        try:
            data = await self._objects.get(key, sha256)
        except FileNotFoundError:
            raise web.HTTPNotFound(text="no such object") from None
        except CorruptObject:
            log.error("an object differs from its sha256", key=key)
            raise web.HTTPInternalServerError(text="the object is damaged") from None
        name = key.rsplit("/", 1)[-1]
        return web.Response(
            body=data,
            content_type="application/octet-stream",
            headers={
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "private, max-age=60",
                "Digest": f"sha-256={sha256}",
            },
        )
