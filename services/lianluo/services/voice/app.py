"""Composition root of the voice service: wire the parts together and serve."""

from __future__ import annotations

from lianluo.runtime.metrics import Figure
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.services.voice.audio import Speech
from lianluo.services.voice.grpc_api import WebPhoneApi
from lianluo.services.voice.service import Calls, Platform
from lianluo.services.voice.settings import VoiceSettings
from lianluo.services.voice.sip import Endpoint
from lianluo.voice.v1 import voice_pb2 as api
from lianluo.voice.v1 import voice_pb2_grpc as rpc

# Calls live in memory and in the interactions they make: no tables of its own.
SPEC = ServiceSpec(name="voice", settings=VoiceSettings, migrations=None)


async def build(settings: VoiceSettings) -> Service:
    return (await assemble(settings))[0]


async def assemble(settings: VoiceSettings) -> tuple[Service, Calls]:
    """The service, and its calls (which tests read: what each call received and sent)."""
    service = Service(SPEC, settings)
    view = await service.follow_tenant_config()
    calls = Calls(settings, view, Platform(settings), Speech(settings.voice_tts_command))
    endpoint = Endpoint(
        settings.voice_sip_host,
        settings.voice_sip_port,
        calls.handle,
        settings.tls(),
        settings.voice_tls_port,
    )
    calls.endpoint = endpoint
    await endpoint.start()
    service.add_grpc(
        rpc.add_WebPhoneServiceServicer_to_server,
        WebPhoneApi(calls.phones, view),
        api.DESCRIPTOR.services_by_name["WebPhoneService"].full_name,
    )
    service.add_background(endpoint, "sip")
    service.metrics.add(
        Figure(
            "lianluo_voice_calls_open",
            "SIP calls this replica holds: callers' calls and the legs to agents' phones",
            lambda: calls.open_calls,
        )
    )
    return service, calls


async def serve(settings: VoiceSettings) -> None:
    await (await build(settings)).serve()
