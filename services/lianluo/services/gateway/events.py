"""What the gateway consumes: `interaction.message`, for agents' replies to go out on the
customer's channel (e-mail, SMS, WeChat), and `interaction.ended`, for the satisfaction survey
there. It acts through the platform's APIs with customers' session tokens, and publishes one
topic itself: `notice.receipt`, what the SMS provider reports of the notices it texted
(sms.SmsIn)."""

from __future__ import annotations

from lianluo.runtime import contract
from lianluo.services.gateway.replies import Replies
from lianluo.services.gateway.survey import Surveys

# Its consumer group, and the producer its envelopes name.
SERVICE = "gateway"


def handlers(replies: Replies, surveys: Surveys) -> contract.Handlers:
    on = contract.Handlers(SERVICE)
    on.on("interaction.message", replies.queue)
    on.on("interaction.ended", surveys.ask)
    return on
