"""Settings of the channel gateway (environment variables prefixed LIANLUO_)."""

from typing import Annotated

from pydantic import Field

from lianluo.runtime.settings import ObjectStoreSettings, ServiceSettings, SmtpRelaySettings


class GatewaySettings(ServiceSettings, SmtpRelaySettings, ObjectStoreSettings):
    """Replies to e-mail go out through the SMTP relay (LIANLUO_SMTP_*); attachments are kept
    in the object store (LIANLUO_OBJECT_STORE_*)."""

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
    # The SMTP server customers' mail reaches (the MX of the channels' domains points at it).
    gateway_smtp_host: str = "127.0.0.1"
    gateway_smtp_port: Annotated[int, Field(ge=0, le=65535)] = 2525
    # The largest message taken, in bytes; a larger one is refused in the SMTP dialogue (552).
    gateway_mail_max_bytes: Annotated[int, Field(ge=1024, le=50 * 1024 * 1024)] = 10 * 1024 * 1024
    # The domain of the Message-IDs of agents' replies, and the SMTP server's name.
    gateway_mail_domain: str = "gateway.lianluo.local"
    # The gateway's public base URL, as providers call it (for example
    # "https://chat.acme.example"): SMS webhooks are signed over the URL the provider used.
    # Empty: the URL of the request itself.
    gateway_public_url: str = ""
    # How long a call to a provider's API (SMS) may take.
    gateway_provider_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    # Attachments customers send (web chat uploads, e-mail attachments): the largest taken.
    gateway_attachment_max_bytes: Annotated[int, Field(ge=1024, le=100 * 1024 * 1024)] = (
        5 * 1024 * 1024
    )
    # How long a link to an attachment opens it: shown in a chat or given to an agent, and sent
    # in a text message (SMS, WeChat), which the customer may read hours later.
    gateway_link_seconds: Annotated[int, Field(ge=10, le=86_400)] = 600
    gateway_sent_link_seconds: Annotated[int, Field(ge=60, le=30 * 86_400)] = 7 * 86_400
