"""Settings of the media service (environment variables prefixed LIANLUO_)."""

from typing import Annotated

from pydantic import Field

from lianluo.runtime.settings import ServiceSettings


class MediaSettings(ServiceSettings):
    # A stream that cannot take frames this fast is closed instead of slowing everyone down.
    stream_buffer_frames: Annotated[int, Field(ge=16, le=100_000)] = 1000
