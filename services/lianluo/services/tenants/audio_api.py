"""The recordings' gRPC adapter: requests in, service calls, responses out."""

from __future__ import annotations

from typing import Any

from lianluo.common.v1 import common_pb2
from lianluo.runtime import auth
from lianluo.services.tenants.audio import Audio
from lianluo.tenants.v1 import audio_pb2 as apb
from lianluo.tenants.v1 import audio_pb2_grpc as arpc

# Recordings are part of the tenant's configuration: flows and voice channels name them.
READ, WRITE = auth.needs("config:read"), auth.needs("config:write")


class AudioApi(arpc.AudioServiceServicer):
    def __init__(self, audio: Audio) -> None:
        self.audio = audio

    @WRITE
    async def PutAudio(self, request: apb.PutAudioRequest, _: Any) -> apb.Audio:
        return await self.audio.put_audio(request.tenant_id, request.audio)

    @READ
    async def GetAudio(self, request: apb.GetAudioRequest, _: Any) -> apb.Audio:
        return await self.audio.get_audio(request.tenant_id, request.name, request.language)

    @READ
    async def ListAudio(self, request: apb.ListAudioRequest, _: Any) -> apb.ListAudioResponse:
        items, token = await self.audio.list_audio(
            request.tenant_id, request.page.page_size, request.page.page_token
        )
        return apb.ListAudioResponse(
            audio=items, page=common_pb2.PageResponse(next_page_token=token)
        )

    @WRITE
    async def DeleteAudio(self, request: apb.DeleteAudioRequest, _: Any) -> apb.DeleteAudioResponse:
        await self.audio.delete_audio(request.tenant_id, request.name, request.language)
        return apb.DeleteAudioResponse()
