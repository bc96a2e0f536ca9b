"""Settings of the ACD (environment variables prefixed LIANLUO_)."""

from typing import Annotated, Any

from pydantic import Field, field_validator

from lianluo.runtime.settings import ServiceSettings
from lianluo.services.acd.policy import check_setting


class AcdSettings(ServiceSettings):
    """Offer, timer and routing-policy settings on top of the shared ones."""

    # How long an agent has to answer an offer before it goes to the next agent.
    offer_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 20.0
    # An answer given before expiry is still travelling through agent.event (through the
    # outbox of whichever replica took it, and across a takeover when the owner died); the offer
    # waits up to this long for it rather than timing out under the agent's click.
    answer_grace_seconds: Annotated[float, Field(ge=0, le=120)] = 30.0
    # How often the owner looks for expired offers and contacts past their max wait.
    timer_tick_seconds: Annotated[float, Field(gt=0, le=10)] = 0.2
    # Routing policies as JSON, per tenant id or "*" for all (docs/routing.md):
    # {"*": {"default": {...}, "queues": {"cards": {...}}, "capacity_cost": {"1": 1.0}}}.
    routing_policies: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("routing_policies")
    @classmethod
    def _valid_policies(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        try:
            check_setting(value)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a valid routing policy: {error}") from error
        return value
