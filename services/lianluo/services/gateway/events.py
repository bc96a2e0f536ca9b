"""What the gateway consumes: `interaction.message`, for agents' replies to go out on the
customer's channel (e-mail, SMS). It publishes nothing itself: it acts through the
platform's APIs with customers' session tokens."""

from __future__ import annotations

from lianluo.runtime import contract
from lianluo.services.gateway.replies import Replies

CONSUMER = "gateway"


def handlers(replies: Replies) -> contract.Handlers:
    on = contract.Handlers(CONSUMER)
    on.on("interaction.message", replies.queue)
    return on
