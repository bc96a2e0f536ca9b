"""The channels a delivery travels on: a signed webhook POST, or an e-mail over SMTP.

A sender never raises for a failed attempt: it says what the attempt came to, so the worker
can decide between DELIVERED, a retry and FAILED.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiohttp
import aiosmtplib

from lianluo.services.notification.deliveries import (
    DELIVERED_RESULT,
    AttemptResult,
    Delivery,
    classify_http,
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


class EmailSender:
    """Sends the rendered subject and body from the rule's address to the customer's."""

    def __init__(self, settings: NotificationSettings) -> None:
        self._settings = settings

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, delivery: Delivery) -> AttemptResult:
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
