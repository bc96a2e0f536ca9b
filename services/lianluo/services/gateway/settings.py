"""Settings of the channel gateway (environment variables prefixed LIANLUO_)."""

from typing import Annotated

from pydantic import Field

from lianluo.runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    # The HTTP server customers' channels reach: the widget, its page and its WebSocket.
    gateway_http_host: str = "127.0.0.1"
    gateway_http_port: Annotated[int, Field(ge=0, le=65535)] = 8088
    # The cell's tenants and media services: the gateway calls them as an app would, with
    # customers' session tokens (docs/channels.md says why this is a call, not an event).
    gateway_tenants_address: str = "127.0.0.1:50051"
    gateway_media_address: str = "127.0.0.1:50052"
    # The most a WebSocket message from a browser may hold, and how many messages per second a
    # session may send before it is closed.
    gateway_max_frame_bytes: Annotated[int, Field(ge=1024, le=1_048_576)] = 16_384
    gateway_session_messages_per_second: Annotated[int, Field(ge=1, le=1000)] = 5
    # How long a new socket may take to say hello.
    gateway_hello_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
