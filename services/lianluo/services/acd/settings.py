"""Settings of the ACD (environment variables prefixed LIANLUO_)."""

from typing import Annotated, Any

from pydantic import Field, field_validator

from lianluo.domain.routing import check_layer
from lianluo.runtime.settings import ServiceSettings


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
    # The platform's routing policy for every tenant, as JSON (docs/routing.md), below each
    # tenant's own `routing_policy`: {"default": {...}, "queues": {"cards": {...}}, ...}.
    routing_defaults: dict[str, Any] = Field(default_factory=dict)

    @field_validator("routing_defaults")
    @classmethod
    def _valid_policies(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            check_layer(value)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a valid routing policy: {error}") from error
        return value
