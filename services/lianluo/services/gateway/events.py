"""What the gateway consumes: `interaction.message`, for agents' replies to go out on the
customer's channel (today by e-mail). It publishes nothing itself: it acts through the
platform's APIs with customers' session tokens."""

from __future__ import annotations

from lianluo.runtime import contract
from lianluo.services.gateway.mail import MailOut

CONSUMER = "gateway"


def handlers(mail: MailOut) -> contract.Handlers:
    on = contract.Handlers(CONSUMER)
    on.on("interaction.message", mail.queue_reply)
    return on
