"""The channels a delivery travels on: a signed webhook POST, an e-mail over SMTP, and through
the channel gateway a text from the tenant's SMS number or a notice in the customer's inbox in
the tenant's app.

A sender never raises for a failed attempt: it says what the attempt came to, so the worker
can decide between DELIVERED, a retry and FAILED.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any, Protocol

import aiohttp
import aiosmtplib
import grpc

from lianluo.gateway.v1 import gateway_pb2 as gpb
from lianluo.gateway.v1 import gateway_pb2_grpc as gateway_rpc
from lianluo.runtime.grpc_server import platform_channel
from lianluo.services.notification.deliveries import (
    DELIVERED_RESULT,
    IN_APP,
    AttemptResult,
    Delivery,
    classify_http,
    gateway_request,
    signature,
    webhook_body,
)
from lianluo.services.notification.settings import NotificationSettings

USER_AGENT = "lianluo-notification/1"


class Sender(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, delivery: Delivery) -> AttemptResult: ...


class WebhookSender:
    """POSTs the delivery as JSON, signed with the rule's secret (HMAC-SHA256 of the body)."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, delivery: Delivery) -> AttemptResult:
        if self._session is None:
            raise RuntimeError("the webhook sender is not started")
        body = webhook_body(delivery)
        headers = {
            "Content-Type": "application/json",
            "X-Lianluo-Signature": signature(body, delivery.signing_secret),
            # Stable across attempts, so a receiver can drop a repeat it already handled.
            "X-Lianluo-Delivery": str(delivery.id),
            "X-Lianluo-Attempt": str(delivery.attempts),
        }
        try:
            # A signed POST is never replayed to wherever a redirect points.
            async with self._session.post(
                delivery.webhook_url, data=body, headers=headers, allow_redirects=False
            ) as response:
                return classify_http(response.status, response.headers.get("Retry-After"))
        except TimeoutError:
            return AttemptResult(False, f"webhook timed out after {self._timeout:g} s")
        except aiohttp.InvalidURL:
            return AttemptResult(False, "webhook URL is not valid", permanent=True)
        except aiohttp.ClientError as error:
            return AttemptResult(False, f"webhook unreachable: {error}")


class Gateway:
    """The channel gateway as this service reaches it: one channel, with the cell's admin key.
    It sends texts and keeps inboxes, and its customer store says who opted out."""

    def __init__(self, settings: NotificationSettings) -> None:
        self.metadata = (("authorization", f"Bearer {settings.admin_key.get_secret_value()}"),)
        self.timeout = settings.notification_gateway_timeout_seconds
        self._channel = platform_channel(settings.notification_gateway_address, settings)
        self.notices = gateway_rpc.NoticeServiceStub(self._channel)
        self._customers = gateway_rpc.CustomerServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def opted_out(self, tenant_id: str, kind: int, value: str) -> bool:
        """Whether the customer store has the address opted out (a STOP, an unsubscribe);
        an address it does not know has not."""
        try:
            customer = await self._customers.FindCustomer(
                gpb.FindCustomerRequest(tenant_id=tenant_id, kind=kind, value=value),  # type: ignore[arg-type]
                metadata=self.metadata,
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return any(
            i.kind == kind and i.value == value and i.HasField("opted_out_time")
            for i in customer.identities
        )


class EmailSender:
    """Sends the rendered subject and body from the rule's address to the customer's, unless
    the customer store has the address unsubscribed."""

    def __init__(self, settings: NotificationSettings, gateway: Gateway) -> None:
        self._settings = settings
        self._gateway = gateway

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._gateway.close()

    async def send(self, delivery: Delivery) -> AttemptResult:
        try:
            out = await self._gateway.opted_out(
                delivery.tenant_id, gpb.IDENTITY_KIND_EMAIL, delivery.email_address
            )
        except grpc.aio.AioRpcError as error:
            return AttemptResult(False, f"the customer store answered {error.code().name}")
        if out:
            return AttemptResult(False, "the address opted out (unsubscribed)", permanent=True)
        s = self._settings
        message = EmailMessage()
        message["From"] = delivery.from_address
        message["To"] = delivery.email_address
        message["Subject"] = delivery.subject
        # One Message-ID for every attempt, so a mailbox can spot a repeat.
        message["Message-ID"] = f"<{delivery.id}@lianluo.notification>"
        message["X-Lianluo-Delivery"] = str(delivery.id)
        message.set_content(delivery.body)
        try:
            await s.relay(message)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [response.code for response in error.recipients]
            return AttemptResult(
                False,
                f"mail server refused the recipient: {codes}",
                permanent=all(500 <= code < 600 for code in codes),
            )
        except aiosmtplib.SMTPResponseException as error:
            return AttemptResult(
                False,
                f"mail server answered {error.code}: {error.message}",
                permanent=500 <= error.code < 600,
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            return AttemptResult(False, f"mail server unreachable: {error!r}")
        return DELIVERED_RESULT


# Answers of the gateway that no retry changes: the number opted out, the tenant has no such
# SMS channel, the request is malformed.
_FINAL = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


class GatewaySender:
    """Asks the channel gateway to text the customer (SMS) or to put the notice in their inbox
    in the tenant's app (in-app); the delivery id makes a repeated attempt send nothing twice."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._gateway.close()

    async def send(self, delivery: Delivery) -> AttemptResult:
        notices = self._gateway.notices
        method: Any = notices.PostToInbox if delivery.channel == IN_APP else notices.SendNotice
        request = gateway_request(delivery)
        try:
            await method(request, metadata=self._gateway.metadata, timeout=self._gateway.timeout)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            return AttemptResult(
                False, f"the gateway answered {code.name}: {error.details()}", code in _FINAL
            )
        return DELIVERED_RESULT
