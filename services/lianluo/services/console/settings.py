"""Settings of the web console (environment variables prefixed LIANLUO_)."""

from typing import Annotated

from pydantic import Field

from lianluo.runtime.settings import ServiceSettings


class ConsoleSettings(ServiceSettings):
    # The HTTP server people's browsers reach: the pages, their JSON API and live events.
    console_http_host: str = "127.0.0.1"
    console_http_port: Annotated[int, Field(ge=0, le=65535)] = 8089
    # The cell's services the console calls, with the signed-in person's token.
    console_tenants_address: str = "127.0.0.1:50051"
    console_media_address: str = "127.0.0.1:50052"
    console_ivr_address: str = "127.0.0.1:50053"
    console_acd_address: str = "127.0.0.1:50054"
    console_gateway_address: str = "127.0.0.1:50057"
    # The voice service, where an agent's desk opens the phone in the browser (WebRTC).
    console_voice_address: str = "127.0.0.1:50060"
    # Session cookies only over HTTPS. Off for a console on http://127.0.0.1 (`make run`).
    console_secure_cookies: bool = True
    # How often the supervisor wall's figures are read again while someone watches.
    console_live_seconds: Annotated[float, Field(ge=0.2, le=60)] = 2.0
    # The largest JSON body a page may send.
    console_max_body_bytes: Annotated[int, Field(ge=1024, le=1_048_576)] = 65_536
