"""The gRPC adapter: requests in, service calls, responses out. No rules live here."""

from __future__ import annotations

from typing import Any

from lianluo.common.v1 import common_pb2
from lianluo.recording.v1 import recording_pb2 as pb
from lianluo.recording.v1 import recording_pb2_grpc as rpc
from lianluo.runtime import auth
from lianluo.services.recording.service import RecordingService


class RecordingApi(rpc.RecordingServiceServicer):
    def __init__(self, svc: RecordingService) -> None:
        self.svc = svc

    @auth.needs("recording:read")
    async def GetRecording(self, request: pb.GetRecordingRequest, _: Any) -> pb.Recording:
        return await self.svc.get_recording(request.tenant_id, request.interaction_id)

    @auth.needs("recording:read")
    async def ListRecordings(
        self, request: pb.ListRecordingsRequest, _: Any
    ) -> pb.ListRecordingsResponse:
        items, token = await self.svc.list_recordings(request)
        return pb.ListRecordingsResponse(
            recordings=items, page=common_pb2.PageResponse(next_page_token=token)
        )

    @auth.needs("recording:read")
    async def Export(self, request: pb.ExportRequest, _: Any) -> pb.ExportResponse:
        return await self.svc.export(request)

    @auth.needs("recording:read")
    async def VerifyRecording(
        self, request: pb.VerifyRecordingRequest, _: Any
    ) -> pb.VerifyRecordingResponse:
        return await self.svc.verify(request.tenant_id, request.interaction_id)

    @auth.needs("recording:write")
    async def SetLegalHold(self, request: pb.SetLegalHoldRequest, _: Any) -> pb.RecordingSummary:
        return await self.svc.set_legal_hold(request)

    @auth.needs("recording:write")
    async def SetRetention(self, request: pb.SetRetentionRequest, _: Any) -> pb.RecordingSummary:
        return await self.svc.set_retention(request)
