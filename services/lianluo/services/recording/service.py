"""The recording service's API logic: authorise, validate, read or change, scoped to a tenant."""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from datetime import UTC, datetime, timedelta

import asyncpg

from lianluo.domain.words import Segmenter, query_terms
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.runtime import auth
from lianluo.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from lianluo.runtime.objects import (
    CorruptObject,
    Links,
    Objects,
    attachment_path,
    object_path,
    stored_key,
    tenant_key,
)
from lianluo.services.recording import domain, requests, transcript
from lianluo.services.recording.domain import Summary
from lianluo.services.recording.repository import Repository

RESOURCE = "recording"
# What a name inside an export's zip may hold: no path separators, nothing a shell trips on.
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class RecordingService:
    """Every RecordingService RPC, for the caller's own tenant only."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: Repository,
        words: Segmenter,
        links: Links,
        objects: Objects,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._words = words
        self._links = links
        self._objects = objects

    async def _summary(
        self, conn: asyncpg.Connection, tenant_id: str, interaction_id: str, *, lock: bool = False
    ) -> Summary:
        found = await self._repo.get_summary(conn, tenant_id, interaction_id, for_update=lock)
        if found is None:
            raise NotFound(RESOURCE, interaction_id)
        return found

    async def get_recording(self, tenant_id: str, interaction_id: str) -> pb.Recording:
        auth.require_tenant(tenant_id)
        requests.ids_request(tenant_id, interaction_id)
        # One snapshot: the summary's counts agree with the entries and media returned.
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            summary = await self._summary(conn, tenant_id, interaction_id)
            entries = await self._repo.entries(conn, tenant_id, interaction_id)
            media = await self._repo.media(conn, tenant_id, interaction_id)
        return pb.Recording(
            summary=domain.summary_message(summary),
            entries=domain.record_entries(domain.order_entries(entries)),
            media=media,
        )

    async def verify(self, tenant_id: str, interaction_id: str) -> pb.VerifyRecordingResponse:
        auth.require_tenant(tenant_id)
        requests.ids_request(tenant_id, interaction_id)
        # One snapshot: the entries, the head and the count as they stand together.
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            summary = await self._summary(conn, tenant_id, interaction_id)
            entries = await self._repo.chain(conn, tenant_id, interaction_id)
            days = (e.stored_day for e in entries if e.stored_day is not None)
            roots = await self._repo.roots_of_days(conn, tenant_id, days)
        answer = domain.verify_chain(entries, summary.head_sha256, summary.entry_count)
        if answer.intact:
            domain.check_anchors(interaction_id, entries, roots, answer)
        return answer

    async def list_recordings(
        self, request: pb.ListRecordingsRequest
    ) -> tuple[list[pb.RecordingSummary], str]:
        auth.require_tenant(request.tenant_id)
        flt, page = requests.list_request(request)
        tsquery = ""
        if flt.text:
            # Every word must be in the record: what a person narrowing a search expects.
            tsquery = " & ".join(query_terms(await self._words.terms(flt.text)))
            if not tsquery:
                raise InvalidArgument(
                    [FieldViolation("text", "has no words to search by (only common ones)")]
                )
        async with self._pool.acquire() as conn:
            found = await self._repo.list_page(conn, request.tenant_id, flt, page, tsquery)
        token = ""
        if len(found) == page.size:
            last = found[-1]
            token = requests.next_token(
                requests.list_scope(request.tenant_id, flt), last.start_time, last.interaction_id
            )
        return [domain.summary_message(s) for s in found], token

    async def export(self, request: pb.ExportRequest) -> pb.ExportResponse:
        auth.require_tenant(request.tenant_id)
        seconds = requests.link_ttl_seconds(request)
        recording = await self.get_recording(request.tenant_id, request.interaction_id)
        expires = datetime.now(UTC) + timedelta(seconds=seconds)
        references = []
        for m in recording.media:
            if not m.uri:
                continue
            reference = pb.MediaReference(
                media_item_id=m.id,
                url=m.uri,
                name=m.name,
                content_type=m.content_type,
                size_bytes=m.size_bytes,
                sha256=m.sha256,
            )
            key = stored_key(request.tenant_id, m.uri)
            if key is not None and m.uri.startswith("attachment:"):
                path = attachment_path(request.tenant_id, m.uri.removeprefix("attachment:"))
            elif key is not None and m.sha256:
                path = object_path(key, m.sha256)
            else:
                path = ""
            if path:
                # Opened by the gateway, which checks the object against its sha256.
                reference.url = self._links.url(path, seconds)
                reference.expire_time.FromDatetime(expires)
            references.append(reference)
        document = transcript.transcript(recording)
        answer = pb.ExportResponse(transcript_json=document, media=references)
        bundle = await self._bundle(request.tenant_id, recording, document)
        key = tenant_key(request.tenant_id, "exports", f"{uuid.uuid4()}.zip")
        stored = await self._objects.put(key, bundle, "application/zip")
        async with self._pool.acquire() as conn:
            await self._repo.delete_later(
                conn, request.tenant_id, request.interaction_id, key, expires
            )
        answer.bundle_url = self._links.url(object_path(key, stored.sha256), seconds)
        answer.bundle_sha256 = stored.sha256
        answer.bundle_expire_time.FromDatetime(expires)
        return answer

    async def _bundle(self, tenant_id: str, recording: pb.Recording, document: str) -> bytes:
        """The zip of an export: the transcript, and each stored media item, read whole and
        checked against its sha256: one that differs, or is gone, fails the export, naming it."""
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr("transcript.json", document)
            for m in recording.media:
                key = stored_key(tenant_id, m.uri)
                if key is None or not m.sha256:
                    continue
                try:
                    data = await self._objects.get(key, m.sha256)
                except CorruptObject:
                    raise FailedPrecondition(f"media[{m.id}]", "differs from its sha256") from None
                except FileNotFoundError:
                    raise FailedPrecondition(f"media[{m.id}]", "is gone from the store") from None
                name = _SAFE.sub("_", m.name or key.rsplit("/", 1)[-1])
                bundle.writestr(f"media/{_SAFE.sub('_', m.id)}/{name}", data)
        return out.getvalue()

    async def set_legal_hold(self, request: pb.SetLegalHoldRequest) -> pb.RecordingSummary:
        auth.require_tenant(request.tenant_id)
        requests.legal_hold_request(request)
        async with self._pool.acquire() as conn, conn.transaction():
            summary = await self._summary(
                conn, request.tenant_id, request.interaction_id, lock=True
            )
            if summary.legal_hold != request.held or summary.legal_hold_reason != request.reason:
                summary.legal_hold = request.held
                summary.legal_hold_reason = request.reason
                summary.legal_hold_time = datetime.now(UTC)
                await self._repo.save_summary(conn, summary)
        return domain.summary_message(summary)

    async def set_retention(self, request: pb.SetRetentionRequest) -> pb.RecordingSummary:
        auth.require_tenant(request.tenant_id)
        until = requests.retention_request(request)
        async with self._pool.acquire() as conn, conn.transaction():
            summary = await self._summary(
                conn, request.tenant_id, request.interaction_id, lock=True
            )
            summary.retain_until = until
            summary.retention_explicit = True
            await self._repo.save_summary(conn, summary)
        return domain.summary_message(summary)
