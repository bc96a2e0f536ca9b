"""Settings of the voice service (environment variables prefixed LIANLUO_)."""

from __future__ import annotations

import ssl
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from lianluo.runtime.settings import ObjectStoreSettings, ServiceSettings


class VoiceSettings(ServiceSettings, ObjectStoreSettings):
    """Where SIP and RTP listen, the services a call uses, and the limits that keep a flood of
    calls from one tenant or one peer away from the others."""

    # SIP over UDP and TCP, on the same port.
    voice_sip_host: str = "127.0.0.1"
    voice_sip_port: Annotated[int, Field(ge=0, le=65535)] = 5060
    # SIP over TLS (RFC 3261 26.2), served on this port when a certificate (PEM, with its
    # chain) and its key are set; 0 takes any free port.
    voice_tls_port: Annotated[int, Field(ge=0, le=65535)] = 5061
    voice_tls_cert_file: str = ""
    voice_tls_key_file: str = ""
    # The address peers reach this replica at, put in Contact and SDP; empty is the SIP host.
    voice_public_host: str = ""
    # The UDP ports RTP takes, one per call: "first-last".
    voice_rtp_ports: str = "20000-20999"
    # Calls at once on this replica; one more is answered 503 with Retry-After.
    voice_max_calls: Annotated[int, Field(gt=0, le=10_000)] = 200
    # New calls a second on this replica, over which INVITEs are answered 503 too.
    voice_invites_per_second: Annotated[float, Field(gt=0, le=10_000)] = 50.0
    # The cell's services a call goes through.
    voice_tenants_address: str = "127.0.0.1:50051"
    voice_media_address: str = "127.0.0.1:50052"
    voice_gateway_address: str = "127.0.0.1:50057"
    voice_acd_address: str = "127.0.0.1:50054"
    # Where calls out go (a SIP trunk or gateway to the phone network), "host:port"; empty:
    # no call out is made, so callbacks wait for an agent to dial them.
    voice_trunk: str = ""
    # The speech synthesiser for prompts given as text.
    voice_tts_command: str = "espeak-ng"
    # While queued, the caller hears this again every so often.
    voice_hold_notice_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("voice_rtp_ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        first, _, last = value.partition("-")
        if not (first.isdigit() and last.isdigit() and 1024 <= int(first) <= int(last) < 65536):
            raise ValueError("must be first-last, within 1024-65535")
        return value

    @field_validator("voice_trunk")
    @classmethod
    def _trunk(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if value and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError("must be host:port")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> VoiceSettings:
        # Contact headers and SDP must name an address peers can reach, never "every address".
        if self.voice_sip_host in ("0.0.0.0", "::") and not self.voice_public_host:  # noqa: S104
            raise ValueError(
                "LIANLUO_VOICE_PUBLIC_HOST must be set when LIANLUO_VOICE_SIP_HOST listens on "
                "every address"
            )
        return self

    @model_validator(mode="after")
    def _tls(self) -> VoiceSettings:
        cert, key = self.voice_tls_cert_file, self.voice_tls_key_file
        if bool(cert) != bool(key):
            raise ValueError(
                "LIANLUO_VOICE_TLS_CERT_FILE and LIANLUO_VOICE_TLS_KEY_FILE go together"
            )
        if cert:
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"LIANLUO_VOICE_TLS_CERT_FILE {cert} and its key {key} cannot be used ({error})"
                ) from None
        return self

    def tls(self) -> ssl.SSLContext | None:
        """The context SIP over TLS is served with; None when it is not."""
        if not self.voice_tls_cert_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.voice_tls_cert_file, self.voice_tls_key_file)
        return context

    def rtp_range(self) -> range:
        first, _, last = self.voice_rtp_ports.partition("-")
        return range(int(first), int(last) + 1)

    def public_host(self) -> str:
        return self.voice_public_host or self.voice_sip_host
