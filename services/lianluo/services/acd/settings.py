"""Settings of the ACD (environment variables prefixed LIANLUO_)."""

from typing import Annotated

from pydantic import Field

from lianluo.runtime.settings import ServiceSettings


class AcdSettings(ServiceSettings):
    """Offer and timer settings on top of the shared ones."""

    # How long an agent has to answer an offer before it goes to the next agent.
    offer_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 20.0
    # An answer given before expiry is still travelling through agent.event; the offer waits
    # up to this long for it rather than timing out under the agent's click.
    answer_grace_seconds: Annotated[float, Field(ge=0, le=60)] = 5.0
    # How often the owner looks for expired offers and contacts past their max wait.
    timer_tick_seconds: Annotated[float, Field(gt=0, le=10)] = 0.2
