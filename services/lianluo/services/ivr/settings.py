"""Settings of the IVR service (environment variables prefixed LIANLUO_)."""

from typing import Annotated

from pydantic import Field

from lianluo.runtime.settings import ServiceSettings


class IvrSettings(ServiceSettings):
    """The shared settings, plus how the IVR looks for prompts that timed out."""

    # How often each replica looks for runs whose prompt timed out.
    timeout_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    # At most this many timed-out runs are stepped in one transaction.
    timeout_batch: Annotated[int, Field(ge=1, le=10_000)] = 100
